"""One training run of a small litgpt GPT on byte-level text, as the efficiency benchmark needs it.

A run is a pure function of ``(optimizer name, lr, seed, model spec, train spec, data)``: the seed
sets the weight initialisation (litgpt's own ``pretrain`` initialisation) and the order of the
training windows; the validation windows are the same for every run. The loop is litgpt's:
every iteration sets **every** param group's ``lr`` to ``litgpt.pretrain.get_lr(lr, ...)`` (linear
warmup, cosine decay to ``min_lr_ratio · lr``), clips the global gradient norm, then steps. The
Muon-family optimizers keep their AdamW branch at ``lr · adamw_lr_ratio`` through that rewrite.

Example:
    >>> from lightning_muon.benchmarks.lm_training import ModelSpec, TrainSpec, BenchData, train_run
    >>> data = BenchData.load(max_bytes=200_000, block_size=32, val_windows=8)
    >>> spec = TrainSpec(steps=3, batch_size=2, warmup_steps=1, eval_every=3)
    >>> result = train_run("normuon", 1e-3, 0, ModelSpec(n_layer=1, n_embd=32, n_head=2, block_size=32), spec, data)
    >>> result.eval_steps, len(result.val_losses), result.diverged
    ([0, 3], 2, False)
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from lightning_muon.data.corpus import VOCAB_SIZE, load_corpus, split_corpus
from lightning_muon.data.windows import RandomWindowBatches
from lightning_muon.optim.registry import get_optimizer_class
from lightning_muon.optim.routing import route_parameters

BASELINE = "adamw"
#: Non-default constructor arguments of the benchmarked optimizers (SpectralMuon at p = 1/2).
OPTIMIZER_KWARGS: dict[str, dict[str, Any]] = {"spectral_muon": {"power": 0.5}}
#: AdamW baseline settings: torch's default lr, the betas of the Muon-family AdamW branches, and
#: decoupled weight decay 0.1 on the hidden matrices only (the parameters the Muon branch would take).
ADAMW_LR = 1e-3
ADAMW_BETAS = (0.9, 0.95)
ADAMW_WEIGHT_DECAY = 0.1


@dataclass(frozen=True)
class ModelSpec:
    """A small pre-norm litgpt GPT (RMSNorm, rotary positions, GELU MLP, no biases) over bytes."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128
    vocab_size: int = VOCAB_SIZE

    def litgpt_config(self) -> Any:
        """The ``litgpt.Config`` of this model."""
        from litgpt.model import Config

        return Config(
            name=f"bench-{self.n_layer}x{self.n_embd}",
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
            vocab_size=self.vocab_size,
            padded_vocab_size=self.vocab_size,
            norm_class_name="RMSNorm",
            mlp_class_name="GptNeoxMLP",
            intermediate_size=4 * self.n_embd,
            bias=False,
            parallel_residual=False,
            rotary_percentage=1.0,
        )


@dataclass(frozen=True)
class TrainSpec:
    """Schedule and evaluation of a run (the same for every optimizer)."""

    steps: int = 400
    batch_size: int = 8
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    max_norm: float = 1.0
    eval_every: int = 20
    device: str = "cpu"
    autocast_bf16: bool = False


@dataclass
class BenchData:
    """The byte-level training stream and fixed validation windows ``(N, block_size + 1)``."""

    train_tokens: torch.Tensor
    val_windows: torch.Tensor
    block_size: int

    @classmethod
    def load(
        cls,
        max_bytes: int = 4_000_000,
        block_size: int = 128,
        val_windows: int = 64,
        data_dir: str | None = None,
    ) -> BenchData:
        """Read the corpus (the standard library's source by default), split it 95/5 with seed 0, and
        take ``val_windows`` windows at evenly spaced offsets across the validation stream."""
        tokens = load_corpus(data_dir, max_bytes=max_bytes)
        train, val = split_corpus(tokens, val_fraction=0.05, seed=0)
        last = val.numel() - block_size - 1
        if last < 0:
            raise ValueError(
                f"the validation split has {val.numel()} bytes, fewer than block_size + 1 = {block_size + 1}"
            )
        offsets = torch.linspace(0, last, val_windows).long()
        windows = torch.stack([val[o : o + block_size + 1] for o in offsets.tolist()])
        return cls(train, windows, block_size)


@dataclass
class RunResult:
    """What one run measured."""

    optimizer: str
    lr: float
    seed: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    step_time_s: float = math.nan
    diverged: bool = False

    @property
    def final_val_loss(self) -> float:
        """Validation loss after the last step (``inf`` when the run diverged)."""
        return math.inf if self.diverged or not self.val_losses else self.val_losses[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``final_val_loss``."""
        out = asdict(self)
        out["train_losses"] = [round(x, 4) for x in self.train_losses[::10]]  # every 10th step
        out["final_val_loss"] = self.final_val_loss
        return out


def default_lr(name: str) -> float:
    """The learning rate an optimizer's constructor defaults to (AdamW: torch's 1e-3)."""
    if name == BASELINE:
        return ADAMW_LR
    return float(inspect.signature(get_optimizer_class(name)).parameters["lr"].default)


def default_kwarg(name: str, key: str) -> Any:
    """The default of constructor argument ``key`` of optimizer ``name`` (``OPTIMIZER_KWARGS`` first)."""
    if key in OPTIMIZER_KWARGS.get(name, {}):
        return OPTIMIZER_KWARGS[name][key]
    return inspect.signature(get_optimizer_class(name)).parameters[key].default


def make_optimizer(
    name: str, model: torch.nn.Module, lr: float, kwargs: dict[str, Any] | None = None
) -> torch.optim.Optimizer:
    """The optimizer ``name`` (``"adamw"`` or a registry name) for ``model``, routed by parameter name.

    ``kwargs`` are constructor arguments on top of ``OPTIMIZER_KWARGS`` (the AdamW baseline takes
    none)."""
    named = list(model.named_parameters())
    if name == BASELINE:
        if kwargs:
            raise ValueError(f"the AdamW baseline takes no optimizer kwargs, got {kwargs}")
        groups, _ = route_parameters(named)
        return torch.optim.AdamW(
            [
                {
                    "params": g["params"],
                    "weight_decay": ADAMW_WEIGHT_DECAY if g["branch"] == "muon" else 0.0,
                }
                for g in groups
            ],
            lr=lr,
            betas=ADAMW_BETAS,
        )
    return get_optimizer_class(name)(
        named, lr=lr, **{**OPTIMIZER_KWARGS.get(name, {}), **(kwargs or {})}
    )


def build_model(spec: ModelSpec, seed: int, device: str = "cpu") -> torch.nn.Module:
    """A litgpt ``GPT`` initialised exactly as ``litgpt pretrain`` does, from ``seed``."""
    import lightning as L
    from litgpt.model import GPT
    from litgpt.pretrain import initialize_weights

    torch.manual_seed(seed)
    model = GPT(spec.litgpt_config())
    initialize_weights(L.Fabric(accelerator="cpu", devices=1), model, spec.n_layer, spec.n_embd)
    return model.to(device)


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, spec: TrainSpec) -> float:
    """Mean next-token cross-entropy over ``windows`` (nats per byte)."""
    model.eval()
    total = 0.0
    for chunk in windows.split(32):
        chunk = chunk.to(spec.device).long()
        with torch.autocast(spec.device.split(":")[0], torch.bfloat16, enabled=spec.autocast_bf16):
            logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten())
        total += loss.item() * chunk.shape[0]
    model.train()
    return total / windows.shape[0]


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: TrainSpec,
) -> tuple[float, bool]:
    """One step (forward, backward, clip, step); returns ``(training loss, finite)``."""
    device_type = spec.device.split(":")[0]
    with torch.autocast(device_type, torch.bfloat16, enabled=spec.autocast_bf16):
        logits = model(x)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), spec.max_norm)
    finite = True
    try:
        opt.step()
    except FloatingPointError:  # Muon-family optimizers refuse non-finite gradients
        finite = False
    opt.zero_grad(set_to_none=True)
    if device_type == "cuda":
        torch.cuda.synchronize()
    value = loss.item()
    return value, finite and math.isfinite(value)


def _check_block(model_spec: ModelSpec, data: BenchData) -> None:
    if data.block_size != model_spec.block_size:
        raise ValueError(
            f"data block_size={data.block_size} differs from the model's block_size={model_spec.block_size}"
        )


def train_run(
    optimizer: str,
    lr: float,
    seed: int,
    model_spec: ModelSpec,
    spec: TrainSpec,
    data: BenchData,
    kwargs: dict[str, Any] | None = None,
) -> RunResult:
    """Train one model from scratch and record its validation curve and step time.

    ``kwargs`` are extra constructor arguments of the optimizer (e.g. ``adamw_lr_ratio``)."""
    from litgpt.pretrain import get_lr

    _check_block(model_spec, data)
    model = build_model(model_spec, seed, spec.device)
    opt = make_optimizer(optimizer, model, lr, kwargs)
    batches = RandomWindowBatches(
        data.train_tokens, data.block_size, spec.batch_size, spec.steps, seed=seed
    )
    result = RunResult(
        optimizer, lr, seed, dict(kwargs or {}), [0], [evaluate(model, data.val_windows, spec)]
    )
    times: list[float] = []
    for step in range(1, spec.steps + 1):
        step_lr = get_lr(lr, step - 1, spec.warmup_steps, spec.steps, spec.min_lr_ratio * lr)
        for group in opt.param_groups:
            group["lr"] = step_lr
        x, y = (t.to(spec.device) for t in batches.batch(0, step - 1))
        start = time.perf_counter()
        value, finite = train_step(model, opt, x, y, spec)
        times.append(time.perf_counter() - start)
        result.train_losses.append(value)
        if not finite:
            result.diverged = True
            break
        if step % spec.eval_every == 0 or step == spec.steps:
            val = evaluate(model, data.val_windows, spec)
            result.eval_steps.append(step)
            result.val_losses.append(val)
            if not math.isfinite(val):
                result.diverged = True
                break
    warm = times[5:] or times
    result.step_time_s = statistics.median(warm)
    return result


def interleaved_step_times(
    configs: dict[str, tuple[str, float, dict[str, Any]]],
    model_spec: ModelSpec,
    spec: TrainSpec,
    data: BenchData,
    rounds: int = 7,
    steps_per_round: int = 5,
) -> dict[str, float]:
    """Median seconds per training step of each configuration, timed side by side in this process.

    ``configs`` maps a label to ``(optimizer, lr, kwargs)``. Every configuration gets its own model (seed 0) and three warm-up steps; then ``rounds`` rounds
    time ``steps_per_round`` steps of each optimizer in turn, so a change of machine load affects
    all of them alike. Returns the median over rounds of the mean step time.
    """
    _check_block(model_spec, data)
    batches = RandomWindowBatches(data.train_tokens, data.block_size, spec.batch_size, 1 << 20)
    setups = {}
    for label, (name, lr, kwargs) in configs.items():
        model = build_model(model_spec, 0, spec.device)
        setups[label] = (model, make_optimizer(name, model, lr, kwargs))
    samples: dict[str, list[float]] = {label: [] for label in configs}
    index = 0
    for r in range(rounds + 1):
        for name, (model, opt) in setups.items():
            count = 3 if r == 0 else steps_per_round
            start = time.perf_counter()
            for _ in range(count):
                x, y = (t.to(spec.device) for t in batches.batch(0, index))
                index += 1
                train_step(model, opt, x, y, spec)
            if r:
                samples[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(ts) for name, ts in samples.items()}
