"""A byte-level tokenizer directory for litgpt, built offline: token id ``b`` is the byte ``b``.

litgpt's :class:`litgpt.Tokenizer` reads a ``tokenizer.json`` (Hugging Face ``tokenizers``) and a
``tokenizer_config.json``. :func:`write_byte_tokenizer` writes both for a BPE model with no merges
over the 256 byte symbols of the GPT-2 byte-to-unicode map, with ids ordered by byte value. So
``encode(text) == list(text.encode("utf-8"))``: the same tokens as :mod:`lightning_muon.data`'s
byte-level corpus, no special tokens, vocabulary 256, and any byte sequence decodes back to it.

Run ``python -m lightning_muon.litgpt.make_tokenizer DIR`` to write the files into ``DIR`` (the recipes
use the copy committed in ``recipes/litgpt/byte_tokenizer``).

Example:
    >>> import tempfile
    >>> from litgpt import Tokenizer
    >>> with tempfile.TemporaryDirectory() as d:
    ...     tok = Tokenizer(write_byte_tokenizer(d))
    ...     ids = tok.encode("déf f():").tolist()
    >>> ids == list("déf f():".encode("utf-8")), tok.vocab_size
    (True, 256)
"""

from __future__ import annotations

import json
from pathlib import Path

BYTE_VOCAB_SIZE = 256


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to ``chr(256 + k)`` in
    byte order. This is the alphabet of the ``tokenizers`` ``ByteLevel`` pre-tokenizer.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    mapping: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def byte_tokenizer():
    """The ``tokenizers.Tokenizer`` whose token id of byte ``b`` is ``b``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {char: b for b, char in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def write_byte_tokenizer(directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` of the byte tokenizer into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    byte_tokenizer().save(str(out / "tokenizer.json"), pretty=True)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "bos_token": None,
        "eos_token": None,
        "model_max_length": 1 << 20,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
