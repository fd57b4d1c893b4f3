"""The training loop every stage shares: AdamW (or Muon), warmup + cosine, clipping, accumulation.

A stage recipe (illume_core/train/recipes.py) decides what is trained at which learning rate and on
which data; this loop only runs the steps. It uses bf16 autocast where the device supports it,
resumes from a saved optimizer state and step, reports progress through a callback, and stops
with `NonFiniteLossError` (writing nothing) the moment a loss is NaN or infinite.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Optimisation settings of one training run (a stage, or a round's fine-tuning)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(ge=1)  # optimizer steps
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    warmup_steps: int = Field(0, ge=0)  # linear warmup from 0 to the group's lr
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)  # cosine floor as a fraction of the peak lr
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    clip_norm: float = Field(1.0, gt=0.0)  # global gradient-norm clip
    # auto: bf16 autocast where the device has native bf16 matmul (a GPU that supports it, a CPU
    # with AVX512-BF16 or AMX), else fp32; master weights and optimizer moments stay fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # adamw everywhere, or muon: the model's hidden matrices (`hidden_matrices()`) take
    # orthogonalized momentum updates and the rest AdamW, at the same learning rates (MuonAdamW)
    optimizer: Literal["adamw", "muon"] = "adamw"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stopped and nothing was saved for this step."""

    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(
            f"loss became {loss} at step {step}; training stopped and no checkpoint was written. "
            "Lower the learning rate or check the data of this step, then resume from the last checkpoint."
        )


@dataclass
class ParamGroup:
    """Named parameters trained at one learning rate."""

    name: str
    params: list[torch.nn.Parameter]
    lr: float
    # None: the run's weight decay on matrices. 0 for matrices shared with frozen rows, since
    # decoupled decay would shrink the frozen rows even where their gradient is masked to zero.
    weight_decay: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> ParamGroup:
        """From a torch-style group dict (name, params, lr, optional weight_decay)."""
        return cls(d["name"], list(d["params"]), float(d["lr"]), d.get("weight_decay"))


@dataclass
class TrainState:
    """What a finished (or interrupted) run leaves behind."""

    step: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at `step`: linear warmup, then cosine down to min_lr_ratio."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it.

    Without it, bf16 autocast on a CPU emulates the format and is slower than fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 where asked for, or (auto) where the device has native bf16 matmul; None: plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to g (A, B), approximately: U V^T of its SVD, by the
    quintic Newton-Schulz iteration Muon uses (coefficients 3.4445, -4.7750, 2.0315), which
    pushes every singular value into about [0.7, 1.2] in five steps without an SVD."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.mT
    x = x / (x.norm() + eps)  # singular values <= 1
    for _ in range(steps):
        gram = x @ x.mT  # (A, A) with A the short side
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the groups marked `muon` (hidden weight matrices), AdamW for every other group.

    Muon: Nesterov momentum, then the update orthogonalized (`orthogonalize`) and scaled by
    0.2 * sqrt(max(A, B)), which gives it about AdamW's update RMS, so one learning rate and one
    weight decay serve both kinds of group (the scaling of Moonshot's "Muon is Scalable for LLM
    Training"). Embeddings, heads, norms and biases stay on AdamW, as Muon's authors advise.
    """

    def __init__(
        self,
        groups: list[dict],
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        momentum: float = 0.95,
        ns_steps: int = 5,
    ) -> None:
        defaults = {"betas": betas, "eps": eps, "momentum": momentum, "ns_steps": ns_steps, "muon": False}
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonAdamW takes no closure")
        for g in self.param_groups:
            lr, wd = g["lr"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if g["muon"]:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(g["momentum"]).add_(p.grad)
                    update = orthogonalize(p.grad.add(buf, alpha=g["momentum"]), g["ns_steps"])
                    p.mul_(1 - lr * wd)
                    p.add_(update.to(p.dtype), alpha=-lr * 0.2 * math.sqrt(max(p.shape)))
                    continue
                if not state:
                    state["step"] = torch.zeros(())
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                b1, b2 = g["betas"]
                state["step"] += 1
                t = float(state["step"])
                state["exp_avg"].lerp_(p.grad, 1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - b2**t)).add_(g["eps"])
                p.mul_(1 - lr * wd)
                p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - b1**t))


def make_optimizer(
    groups: list[ParamGroup], cfg: TrainConfig, hidden: set[int] | None = None
) -> torch.optim.Optimizer:
    """AdamW over the groups; 1-d parameters (norms, biases) get no weight decay. With
    cfg.optimizer "muon", the parameters whose ids are in `hidden` (the model's hidden weight
    matrices) form Muon groups of their own, at their group's learning rate and decay."""
    muon = cfg.optimizer == "muon"
    if muon and not hidden:
        raise ValueError(
            "optimizer 'muon' needs the model's hidden matrices (a model with hidden_matrices())"
        )
    hidden = hidden if muon else set()
    torch_groups = []
    for g in groups:
        live = [p for p in g.params if p.requires_grad]
        ortho = [p for p in live if id(p) in hidden and p.ndim == 2]
        taken = {id(p) for p in ortho}  # a hidden tensor that is not a matrix stays on AdamW
        decay = [p for p in live if p.ndim >= 2 and id(p) not in taken]
        no_decay = [p for p in live if p.ndim < 2]
        wd_matrix = cfg.weight_decay if g.weight_decay is None else g.weight_decay
        for params, wd, suffix in (
            (decay, wd_matrix, ""),
            (no_decay, 0.0, ".no_decay"),
            (ortho, wd_matrix, ".muon"),
        ):
            if params:
                group = {"params": params, "lr": g.lr, "weight_decay": wd, "name": g.name + suffix}
                if muon:
                    group["muon"] = suffix == ".muon"
                torch_groups.append(group)
    if not torch_groups:
        raise ValueError("no trainable parameters: the recipe froze everything; check its `trainable` groups")
    if muon:
        return MuonAdamW(torch_groups, betas=cfg.betas)
    return torch.optim.AdamW(torch_groups, betas=cfg.betas, fused=False)


def train_loop(
    model: torch.nn.Module,
    groups: list[ParamGroup],
    batches: Iterator[Any],
    cfg: TrainConfig,
    *,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    device: torch.device | str = "cpu",
    state: dict[str, Any] | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
) -> TrainState:
    """Run `cfg.steps` optimizer steps (continuing from `state` when resuming).

    `loss_fn(model, batch)` returns the scalar loss of one micro-batch; batches must already be
    on `device` or movable by the loss function. `state` is what `optimizer_state()` produced
    (optimizer + scheduler + step): the run then continues at that step with the same moments.
    `progress(step, loss, lr)` is called after each optimizer step; `on_checkpoint(state)` every
    `checkpoint_every` steps and never for a step whose loss was not finite.
    """
    device = torch.device(device)
    model.to(device).train()
    hidden_matrices = getattr(getattr(model, "module", model), "hidden_matrices", None)  # (DDP wraps)
    hidden = {id(p) for p in hidden_matrices()} if hidden_matrices is not None else None
    optimizer = make_optimizer(groups, cfg, hidden)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        else:  # the schedule is a pure function of the step: put it there
            scheduler.last_epoch = start
            for g, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                g["lr"] = base * lr_factor(start, cfg)
    out = TrainState(step=start, optimizer=optimizer, scheduler=scheduler)
    dtype = autocast_dtype(device, cfg.precision)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.grad_accum):
            try:
                batch = next(batches)
            except StopIteration:
                raise ValueError(
                    f"the data ran out at step {step} of {cfg.steps}; give a longer or endless stream"
                ) from None
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model, batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(step, value)
            (loss / cfg.grad_accum).backward()
            total += value / cfg.grad_accum
            out.tokens += int(getattr(batch, "num_tokens", 0))
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        optimizer.step()
        scheduler.step()
        out.step = step + 1
        out.losses.append(total)
        if progress is not None:
            progress(out.step, total, optimizer.param_groups[0]["lr"])
        if (
            checkpoint_every
            and on_checkpoint is not None
            and out.step % checkpoint_every == 0
            and out.step < cfg.steps
        ):
            on_checkpoint(out)
    out.seconds = time.perf_counter() - t0
    return out


def optimizer_state(state: TrainState) -> dict[str, Any]:
    """The resumable part of a run: optimizer moments, scheduler position and step."""
    return {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.step,
    }


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, scalars) into named tensors and a JSON skeleton.

    Tensors are replaced in the skeleton by {"__tensor__": name}, so the pair can be stored as
    safetensors + JSON (no pickle) and rebuilt exactly by `unflatten_state`.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(x, dict):
            return {
                "__dict__": [
                    [walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(x.items())
                ]
            }
        if isinstance(x, list | tuple):
            return {
                "__list__" if isinstance(x, list) else "__tuple__": [
                    walk(v, f"{path}.{i}") for i, v in enumerate(x)
                ]
            }
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} at {path or 'the root'} without pickle")

    return tensors, walk(obj, prefix or "s")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of `flatten_state`."""

    def build(x: Any) -> Any:
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__dict__" in x:
                return {build(k): build(v) for k, v in x["__dict__"]}
            if "__list__" in x:
                return [build(v) for v in x["__list__"]]
            if "__tuple__" in x:
                return tuple(build(v) for v in x["__tuple__"])
        return x

    return build(skeleton)
