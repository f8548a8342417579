"""Byte-level text data: the Python standard library's own source or any folder of text files."""

from lightning_muon.data.corpus import VOCAB_SIZE, CorpusError, decode, load_corpus, split_corpus
from lightning_muon.data.datamodule import ByteCorpusDataModule
from lightning_muon.data.windows import FixedWindows, RandomWindowBatches, ResumableLoader

__all__ = [
    "VOCAB_SIZE",
    "ByteCorpusDataModule",
    "CorpusError",
    "FixedWindows",
    "RandomWindowBatches",
    "ResumableLoader",
    "decode",
    "load_corpus",
    "split_corpus",
]
