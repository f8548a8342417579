"""Lightning and Fabric entry points on 2 CPU processes; run by ``test_lightning_sharded.py``.

Usage: ``python job_lightning.py OUT [HOWTO_SCRIPT]`` (one process: Lightning's launcher starts the second rank by
running the same command). Each rank writes ``OUT/rank{r}.json``; nothing is asserted here.

* Fabric ``ModelParallelStrategy`` (``parallelize_fn`` applies ``fully_shard``): 5 steps against the
  single-process optimizer, then ``fabric.save``/``fabric.load`` and the same continuation;
* Trainer ``ModelParallelStrategy`` (``fully_shard`` in ``configure_model``) with gradient
  accumulation: one Newton–Schulz per window, a ``ModelCheckpoint`` resumed to the same weights;
* Trainer ``DDPStrategy``: owner-computes on replicated plain parameters;
* the FSDP2 how-to's script (quick-start model, ``ModelParallelStrategy``), run as written.

(Lightning's ``FSDPStrategy`` on CPU ranks: ``job_fsdp1_lightning.py``.)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import lightning as L  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from counting import count_orthogonalized  # noqa: E402
from dist_launch import end_process_group  # noqa: E402
from lightning.fabric.strategies import ModelParallelStrategy as FabricModelParallel  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from litgpt import GPT, Config  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon import NorMuon  # noqa: E402

# uneven on 2 ranks: a 37-wide SwiGLU (37 rows of fc_1/fc_2), 53-token vocabulary
CONFIG = dict(
    name="tiny", block_size=8, vocab_size=53, padded_vocab_size=53, n_layer=2, n_head=2, n_embd=12,
    rotary_percentage=1.0, parallel_residual=False, bias=False, norm_class_name="RMSNorm",
    mlp_class_name="LLaMAMLP", intermediate_size=37,
)  # fmt: skip


def gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(Config(**CONFIG))


def shard_gpt(model: GPT, mesh: Any) -> GPT:
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def tokens(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CONFIG["vocab_size"], (n, CONFIG["block_size"] + 1), generator=g)


def lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))


def full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n.replace("_forward_module.", ""): (p.full_tensor() if isinstance(p, DTensor) else p)
        .detach()
        .clone()
        for n, p in model.named_parameters()
    }


def max_rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max()) for n in b)




# ---------------------------------------------------------------------------------------- Fabric
def fabric_checks(out: Path) -> dict[str, Any]:
    def parallelize(model: GPT, device_mesh: Any) -> GPT:
        return shard_gpt(model, device_mesh["data_parallel"])

    strategy = FabricModelParallel(
        parallelize_fn=parallelize, data_parallel_size=2, tensor_parallel_size=1
    )
    fabric = L.Fabric(accelerator="cpu", devices=2, strategy=strategy)
    fabric.launch()
    data = tokens(5 * 4)

    def run(model: torch.nn.Module, opt: Any, batches: torch.Tensor, backward: Any) -> None:
        for batch in batches.split(
            4
        ):  # every rank takes the same batch: the result equals one process
            opt.zero_grad()
            backward(lm_loss(model, batch))
            opt.step()

    model = fabric.setup_module(gpt())
    opt = fabric.setup_optimizers(NorMuon(model, lr=0.01))
    run(model, opt, data[:12], fabric.backward)
    fabric.save(out / "fabric_ckpt", {"model": model, "optimizer": opt})
    run(model, opt, data[12:], fabric.backward)
    sharded = full_params(model)

    reference = gpt()
    ref_opt = NorMuon(reference, lr=0.01)
    lmd.configure(ref_opt, mode="local")
    run(reference, ref_opt, data, lambda loss: loss.backward())

    resumed = fabric.setup_module(gpt(seed=3))
    resumed_opt = fabric.setup_optimizers(NorMuon(resumed, lr=0.01))
    fabric.load(out / "fabric_ckpt", {"model": resumed, "optimizer": resumed_opt})
    run(resumed, resumed_opt, data[12:], fabric.backward)
    engine = lmd.engine_of(opt.optimizer)
    return {
        "rank": fabric.global_rank,
        "layouts": sorted(
            {layout.kind for layout in engine.layouts.values() if layout is not None}
        ),
        "param_rel_diff": max_rel(sharded, full_params(reference)),
        "resume_rel_diff": max_rel(full_params(resumed), sharded),
    }


# ---------------------------------------------------------------------------------------- Trainer
class ShardedGPT(L.LightningModule):
    """``fully_shard`` in ``configure_model``; the optimizer is built afterwards from the sharded module."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.model = gpt(seed)
        self.micro_batches = 0
        self.ns_calls: list[int] = []
        self.ns_after_batch: list[int] = []

    def configure_model(self) -> None:
        shard_gpt(self.model, self.device_mesh["data_parallel"])

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.micro_batches += 1
        return lm_loss(self.model, batch[0])

    def on_train_batch_end(self, *args: Any) -> None:
        self.ns_after_batch.append(len(self.ns_calls))

    def configure_optimizers(self) -> NorMuon:
        opt = NorMuon(self, lr=0.01)
        self.ns_calls = count_orthogonalized(opt)
        return opt


def trainer(out: Path, **kwargs: Any) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=2, max_epochs=2, accumulate_grad_batches=2, logger=False,
        default_root_dir=out,  # Lightning's default checkpoints/ lands here, not in the cwd
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
    )  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def loader() -> DataLoader:
    # 16 sequences: 4 micro-batches of 2 per rank and epoch, 2 optimizer steps per epoch
    return DataLoader(TensorDataset(tokens(16, seed=2)), batch_size=2, shuffle=False)


def trainer_checks(out: Path) -> dict[str, Any]:
    checkpoint = ModelCheckpoint(dirpath=out / "ckpt", save_top_k=-1, every_n_epochs=1)
    model = ShardedGPT()
    fit = trainer(out, callbacks=[checkpoint])
    fit.fit(model, loader())
    final = full_params(model.model)
    opt = fit.optimizers[0]
    engine = lmd.engine_of(opt)
    state = opt.state[model.model.transformer.h[0].attn.qkv.weight]
    result = {
        "global_step": fit.global_step,
        "micro_batches": model.micro_batches,
        "ns_after_batch": model.ns_after_batch,
        "ns_calls": len(model.ns_calls),
        "owned_buckets": sum(
            1 for b in engine.planned(opt.param_groups[0]) if b.owned(b.layout.rank)
        ),
        "layouts": sorted(
            {layout.kind for layout in engine.layouts.values() if layout is not None}
        ),
        "state_is_dtensor": {k: isinstance(v, DTensor) for k, v in state.items()},
        "checkpoints": sorted(p.name for p in (out / "ckpt").iterdir()),
    }
    first_epoch = out / "ckpt" / "epoch=0-step=2.ckpt"
    resumed = ShardedGPT(seed=5)
    trainer(out).fit(resumed, loader(), ckpt_path=first_epoch)
    result["resume_rel_diff"] = max_rel(full_params(resumed.model), final)
    return result


class ReplicatedGPT(L.LightningModule):
    """A plain module for ``DDPStrategy``: the optimizer sees replicated plain tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.model = gpt()
        self.ns_calls: list[int] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return lm_loss(self.model, batch[0])

    def configure_optimizers(self) -> NorMuon:
        opt = NorMuon(self, lr=0.01)
        self.ns_calls = count_orthogonalized(opt)
        return opt


def ddp_checks(out: Path) -> dict[str, Any]:
    """``DDPStrategy``: owner-computes on replicas, which stay bitwise identical."""
    model = ReplicatedGPT()
    fit = trainer(out, strategy="ddp", max_epochs=1, accumulate_grad_batches=1)
    fit.fit(model, loader())
    opt = fit.optimizers[0]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = fit.strategy.all_gather(flat)
    return {
        "layouts": sorted({x.kind for x in lmd.engine_of(opt).layouts.values() if x is not None}),
        "steps": fit.global_step,
        "ns_matrices": sum(model.ns_calls),
        "matrices": len(opt.param_groups[0]["params"]),
        "replicas_identical": bool((gathered == flat).all()),
    }


def howto_script(path: Path, out: Path) -> dict[str, Any]:
    """Run the FSDP2 how-to's ``train_fsdp2.py`` as written (4 steps), in these processes, from
    ``out`` (the script writes ``runs/fsdp2/`` relative to the current directory)."""
    saved, sys.argv = sys.argv, [str(path), "4"]
    cwd = os.getcwd()
    printed = io.StringIO()
    try:
        os.chdir(out)
        with contextlib.redirect_stdout(printed):
            exec(compile(path.read_text(), str(path), "exec"), {"__name__": "__main__"})
    finally:
        sys.argv = saved
        os.chdir(cwd)
    return {"stdout": printed.getvalue()}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    results = {"fabric": fabric_checks(out)}
    results["trainer"] = trainer_checks(out)
    results["ddp"] = ddp_checks(out)
    if len(sys.argv) > 2:
        results["howto"] = howto_script(Path(sys.argv[2]).resolve(), out)
    rank = results["fabric"]["rank"]
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    end_process_group()


if __name__ == "__main__":
    main()
