"""The byte-level corpus: file discovery, cap, split, windows, resumable loader, data module."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

from lightning_muon.data import (
    VOCAB_SIZE,
    ByteCorpusDataModule,
    FixedWindows,
    RandomWindowBatches,
    ResumableLoader,
    decode,
    load_corpus,
    split_corpus,
)
from lightning_muon.data.corpus import stdlib_source_files, text_files


def test_stdlib_files_are_real_sources_in_walk_order_without_tests_or_site_packages():
    root = Path(sysconfig.get_paths()["stdlib"])
    rel = [f.relative_to(root).as_posix() for f in stdlib_source_files()]
    assert "os.py" in rel and "json/decoder.py" in rel
    assert not any("site-packages" in r or r.startswith("test/") for r in rel)
    # depth first, each directory's entries in name order: a sort key of path components
    assert rel == sorted(rel, key=lambda r: r.split("/"))


def test_stdlib_corpus_is_capped_exactly_and_equals_the_files_bytes():
    tokens = load_corpus(max_bytes=50_000)
    assert tokens.dtype == torch.uint8 and tokens.numel() == 50_000
    # independent oracle: the first files of the sorted list, read directly
    expected = b""
    for path in stdlib_source_files():
        expected += path.read_bytes()
        if len(expected) >= 50_000:
            break
    assert bytes(tokens.tolist()) == expected[:50_000]
    assert torch.equal(tokens, load_corpus(max_bytes=50_000))
    assert VOCAB_SIZE == 256


def test_folder_corpus_reads_text_files_in_order_and_skips_binary_and_hidden(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.md").write_text("first file\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c").write_text("third, no suffix\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / ".hidden.txt").write_text("secret")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert [p.name for p in text_files(tmp_path)] == ["a.md", "b.txt", "latin1.txt", "c"]
    assert [p.name for p in text_files(tmp_path / "sub")] == ["c"]
    assert decode(load_corpus(tmp_path)) == "first file\nsecond file\nthird, no suffix\n"
    assert decode(load_corpus(tmp_path / "b.txt")) == "second file\n"


def test_missing_or_empty_data_dir_raises_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        load_corpus(missing)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="empty.*no UTF-8 text"):
        load_corpus(tmp_path / "empty")
    with pytest.raises(ValueError, match="max_bytes"):
        load_corpus(max_bytes=0)


def test_split_is_deterministic_and_made_of_whole_chunks():
    positions = torch.arange(1000)  # token = its position, so the partition is checkable
    train, val = split_corpus(positions, val_fraction=0.1, seed=3, num_chunks=20)
    assert torch.equal(torch.cat([train, val]).sort().values, positions)
    assert val.numel() == 100  # 2 chunks of 50
    chunk_ids = set((val // 50).tolist())
    assert len(chunk_ids) == 2
    assert torch.equal(
        val, torch.cat([torch.arange(50 * c, 50 * c + 50) for c in sorted(chunk_ids)])
    )
    t2, v2 = split_corpus(positions, val_fraction=0.1, seed=3, num_chunks=20)
    assert torch.equal(train, t2) and torch.equal(val, v2)
    _, v3 = split_corpus(positions, val_fraction=0.1, seed=4, num_chunks=20)
    assert not torch.equal(val, v3)
    with pytest.raises(ValueError, match="val_fraction"):
        split_corpus(positions, val_fraction=1.0)


def test_split_of_uneven_chunks_partitions_positions():
    positions = torch.arange(997)
    train, val = split_corpus(positions, val_fraction=0.3, seed=0, num_chunks=10)
    assert torch.equal(torch.cat([train, val]).sort().values, positions)
    assert val.numel() in (297, 298, 299, 300)  # 3 chunks of 99 or 100


def _is_substring(window: torch.Tensor, stream: bytes) -> bool:
    return bytes(window.tolist()) in stream


def test_random_window_batches_are_shifted_substrings_and_worker_count_invariant():
    tokens = load_corpus(max_bytes=20_000)
    stream = bytes(tokens.tolist())
    ds = RandomWindowBatches(tokens, block_size=16, batch_size=4, batches_per_epoch=6, seed=1)
    batches = list(ResumableLoader(ds))
    assert len(batches) == 6
    for x, y in batches:
        assert x.shape == (4, 16) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        full = torch.cat([x, y[:, -1:]], dim=1)
        assert all(_is_substring(row, stream) for row in full)
    with_workers = list(ResumableLoader(ds, num_workers=2))
    assert len(with_workers) == 6
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, with_workers, strict=True))
    second_epoch = ResumableLoader(ds)
    list(second_epoch)
    assert not torch.equal(next(iter(second_epoch))[0], batches[0][0])


def test_resumable_loader_continues_exactly_after_load_state_dict():
    tokens = load_corpus(max_bytes=20_000)
    ds = RandomWindowBatches(tokens, block_size=8, batch_size=2, batches_per_epoch=5, seed=7)
    reference = ResumableLoader(ds)
    expected = list(reference) + list(reference)  # two epochs
    loader = ResumableLoader(ds)
    seen = list(loader)  # epoch 0 finished
    it = iter(loader)
    seen += [next(it), next(it)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "position": 2}
    fresh = ResumableLoader(
        RandomWindowBatches(tokens, block_size=8, batch_size=2, batches_per_epoch=5, seed=7)
    )
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert len(seen) + len(rest) == 10
    for (a, _), (b, _) in zip(seen + rest, expected, strict=True):
        assert torch.equal(a, b)


def test_ranks_draw_different_windows():
    tokens = load_corpus(max_bytes=20_000)
    a = RandomWindowBatches(tokens, 8, 2, 3, seed=0, rank=0, world_size=2).batch(0, 0)[0]
    b = RandomWindowBatches(tokens, 8, 2, 3, seed=0, rank=1, world_size=2).batch(0, 0)[0]
    assert not torch.equal(a, b)


def test_fixed_windows_tile_the_stream():
    tokens = torch.arange(50, dtype=torch.uint8)
    ds = FixedWindows(tokens, block_size=8)
    assert len(ds) == 6
    x, y = ds[5]
    assert x.tolist() == list(range(40, 48)) and y.tolist() == list(range(41, 49))
    assert len(FixedWindows(tokens, 8, max_windows=2)) == 2


def test_datamodule_loaders_and_bad_arguments(tmp_path):
    dm = ByteCorpusDataModule(block_size=32, batch_size=4, max_bytes=40_000, val_fraction=0.1)
    dm.setup("fit")
    assert dm.train_tokens.numel() + dm.val_tokens.numel() == 40_000
    val_a = [x for x, _ in dm.val_dataloader()]
    val_b = [x for x, _ in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val_a, val_b, strict=True))
    assert len(dm.train_dataloader()) == dm.train_tokens.numel() // (32 * 4)
    with pytest.raises(ValueError, match="block_size"):
        ByteCorpusDataModule(block_size=0)
    with pytest.raises(ValueError, match="val_fraction"):
        ByteCorpusDataModule(val_fraction=0.0)
    with pytest.raises(ValueError, match="nowhere"):
        ByteCorpusDataModule(data_dir=str(tmp_path / "nowhere")).setup("fit")
    (tmp_path / "tiny.txt").write_text("abc")
    with pytest.raises(ValueError, match="split has"):
        ByteCorpusDataModule(data_dir=str(tmp_path), block_size=8).setup("fit")


def test_tensor_parallel_ranks_of_one_replica_read_the_same_batches():
    """Under ``ModelParallelStrategy`` the batches follow the data-parallel rank, not the global one:
    the tensor-parallel ranks of a replica must see one batch (else their collectives mix inputs)."""
    from types import SimpleNamespace

    def first_batch(global_rank: int, dp_rank: int) -> torch.Tensor:
        dm = ByteCorpusDataModule(block_size=16, batch_size=2, max_bytes=20_000)
        strategy = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": dp_rank})
        dm.trainer = SimpleNamespace(global_rank=global_rank, world_size=4, strategy=strategy)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))[0]

    # mesh (data 2, tensor 2): global ranks 0, 1 are replica 0; 2, 3 are replica 1
    assert torch.equal(first_batch(0, 0), first_batch(1, 0))
    assert torch.equal(first_batch(2, 1), first_batch(3, 1))
    assert not torch.equal(first_batch(0, 0), first_batch(2, 1))
