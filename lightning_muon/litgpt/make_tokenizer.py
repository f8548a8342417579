"""Write the byte-level tokenizer directory litgpt's ``Tokenizer`` reads.

Usage::

    python -m lightning_muon.litgpt.make_tokenizer checkpoints/byte-tokenizer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .tokenizer import write_byte_tokenizer


def main(argv: list[str] | None = None) -> Path:
    """Parse ``argv`` (a directory) and write the tokenizer files there."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_muon.litgpt.make_tokenizer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "directory", type=Path, help="where tokenizer.json and tokenizer_config.json go"
    )
    out = write_byte_tokenizer(parser.parse_args(argv).directory)
    print(out)
    return out


if __name__ == "__main__":
    main()
