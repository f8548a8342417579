"""The byte tokenizer directory and the ``StdlibText`` litgpt data module."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from litgpt.tokenizer import Tokenizer

from lightning_muon.data.corpus import load_corpus
from lightning_muon.litgpt import (
    StdlibText,
    is_byte_tokenizer,
    tokenizer_size,
    write_byte_tokenizer,
)
from lightning_muon.litgpt.data import _TrainWindows, encode_text
from lightning_muon.litgpt.make_tokenizer import main as make_tokenizer

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "recipes" / "litgpt" / "byte_tokenizer"


@pytest.fixture(scope="module")
def byte_tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer(write_byte_tokenizer(tmp_path_factory.mktemp("bytes")))


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    """A real BPE (with merges, 300 ids) trained on a slice of the standard library."""
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    text = load_corpus(max_bytes=20_000).numpy().tobytes().decode("utf-8", "ignore")
    tok = HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([text], trainer)
    out = tmp_path_factory.mktemp("bpe")
    tok.save(str(out / "tokenizer.json"))
    return out


def test_committed_tokenizer_is_what_the_generator_writes(tmp_path) -> None:
    out = make_tokenizer([str(tmp_path / "tok")])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert filecmp.cmp(out / name, COMMITTED / name, shallow=False), name


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_byte_tokenizer_ids_are_the_utf8_bytes(byte_tok, text) -> None:
    ids = byte_tok.encode(text).tolist()
    assert ids == list(text.encode("utf-8"))
    assert byte_tok.decode(torch.tensor(ids)) == text


def test_byte_tokenizer_covers_every_byte_once(byte_tok) -> None:
    vocab = byte_tok.processor.get_vocab()
    assert sorted(vocab.values()) == list(range(256))
    assert byte_tok.vocab_size == tokenizer_size(byte_tok) == 256
    assert byte_tok.bos_id is None and byte_tok.eos_id is None


def test_is_byte_tokenizer_only_for_identity_tokenizers(byte_tok, bpe_dir) -> None:
    bpe = Tokenizer(bpe_dir)
    assert is_byte_tokenizer(byte_tok) and is_byte_tokenizer(None)
    assert not is_byte_tokenizer(bpe)
    assert tokenizer_size(bpe) == 300


def test_encode_text_with_a_bpe_round_trips(bpe_dir) -> None:
    bpe = Tokenizer(bpe_dir)
    data = load_corpus(max_bytes=200_000)
    ids = encode_text(bpe, data)
    assert ids.numel() < data.numel()  # merges compress
    assert bpe.processor.decode(ids.tolist()) == bytes(data.tolist()).decode("utf-8", "replace")


def test_training_batches_do_not_depend_on_how_the_global_batch_is_split() -> None:
    tokens = torch.randint(0, 256, (5_000,), generator=torch.Generator().manual_seed(1))
    one = _TrainWindows(tokens, 16, 4, 10, seed=42, rank=0, world_size=1).batch(0, 3)
    two = [
        _TrainWindows(tokens, 16, 2, 10, seed=42, rank=r, world_size=2).batch(0, 3) for r in (0, 1)
    ]
    assert one.shape == (4, 17) and one.dtype == torch.int64
    assert torch.equal(one, torch.cat(two))
    corpus = bytes(tokens.to(torch.uint8).tolist())
    assert all(corpus.find(bytes(row.tolist())) >= 0 for row in one)  # contiguous windows


def test_stdlib_text_loaders(byte_tok) -> None:
    dm = StdlibText(max_bytes=50_000, padded_vocab_size=256)
    dm.connect(byte_tok, batch_size=3, max_seq_length=16)
    train = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    assert train.shape == val.shape == (3, 17)
    corpus = bytes(load_corpus(max_bytes=50_000).tolist())
    for row in (*train, *val):
        assert corpus.find(bytes(row.tolist())) >= 0
    assert torch.equal(torch.cat([dm.train_tokens, dm.val_tokens]).sort().values,
                       torch.tensor(list(corpus)).sort().values)  # fmt: skip


def test_stdlib_text_reads_a_folder(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("hello world\n" * 500)
    dm = StdlibText(data_dir=tmp_path, val_fraction=0.1)
    dm.connect(None, batch_size=2, max_seq_length=8)
    dm.setup()
    assert set(torch.cat([dm.train_tokens, dm.val_tokens]).unique().tolist()) == set(
        b"hello world\n"
    )


def test_bad_data_dir_is_refused_at_construction(tmp_path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"data_dir=.*nope.*does not exist"):
        StdlibText(data_dir=missing)


def test_tokenizer_larger_than_padded_vocab_is_refused_in_connect(bpe_dir) -> None:
    dm = StdlibText(max_bytes=10_000, padded_vocab_size=256)
    with pytest.raises(ValueError, match=r"300 token ids but the model's padded_vocab_size is 256"):
        dm.connect(Tokenizer(bpe_dir), batch_size=2, max_seq_length=8)
    assert dm.tokenizer is None  # nothing was changed
