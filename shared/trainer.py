"""One small, readable, resumable training loop for causal language models.

    result = trainer.train(model, batches, TrainConfig(steps=200, ...), device="cpu",
                           out_dir=folder, val_batches=val)
    result.history            # DataFrame: step, lr, train_loss, grad_norm, val_loss, tokens, seconds
    trainer.evaluate(model, val, "cpu")   # mean token cross-entropy; perplexity = exp of it

What one step does, top to bottom (``train``): take the batch of this step, set the
learning rate of this step, forward and loss under autocast (bf16 when asked), backward,
clip the gradient norm, AdamW step (fused; weight decay on matrices only). Nothing else happens per step on the host: losses stay on the
device and are read back every ``log_every`` steps, so a GPU is never stalled by a
``.item()`` (benchmarks/bench_trainer.py: the loop runs at the speed of a bare hand loop).

The model is anything whose ``model(input_ids=x)`` returns logits (``.logits`` of a
transformers causal LM, or a tensor). Batches are ``(x, y)`` LongTensors [B, T] with ``y``
the next tokens of ``x`` (already shifted, as ``shared.corpus.TokenBatches`` gives them), so
the loss is the cross-entropy of the logits against ``y``; we do not pass ``labels=`` to a
transformers model, which would shift once more. A model that returns ``aux_loss`` (a
transformers MoE's load-balancing loss, with ``output_router_logits``) has it added with
its config's ``router_aux_loss_coef``, as transformers does itself. Any other objective:
pass ``loss_fn(model, x, y) -> scalar``.

Resuming. With ``out_dir``, ``checkpoint.pt`` is written there every ``checkpoint_every``
steps and at the end (atomically: a temporary file, then a rename). It holds the model and
optimizer states, the step, torch's RNG states, the history so far and the config. A later
call with the same ``out_dir`` loads it and continues; the result is the same, weight for
weight, as a run that was never interrupted (tested), because nothing else carries state:

- the learning rate is a pure function of the step (``lr_multiplier``), so the step is the
  whole scheduler state;
- the batch of step ``s`` is ``batches[s]`` (``shared.corpus.TokenBatches`` derives it from
  (seed, step); a list) or ``batches(s)`` (a function): random access, nothing to replay; any
  other iterable is replayed from its start and its first ``s`` batches are skipped.

A checkpoint written with another config or seed is refused in one line (delete it or use
another ``out_dir``), and one at the last step means the run is done: the model gets its
weights and the stored result is returned without training.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.progress import bar as progress_bar

if TYPE_CHECKING:  # torch and pandas are imported where they are used (cheap `import shared.trainer`)
    import pandas as pd
    import torch

CHECKPOINT = "checkpoint.pt"
HISTORY_COLUMNS = ["step", "lr", "train_loss", "grad_norm", "val_loss", "tokens", "seconds"]


class TrainConfig(BaseModel):
    """Every knob of a training run, with its default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(gt=0, description="optimizer steps (one batch each)")
    batch_size: int = Field(gt=0, description="sequences per batch")
    seq_len: int = Field(gt=0, description="tokens per sequence")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from lr/warmup_steps to lr over these steps")
    schedule: Literal["cosine", "wsd", "constant"] = Field(
        "cosine",
        description="after warm-up: cosine decay to min_lr_ratio * lr at the last step; wsd: constant, then a "
        "decay (decay_shape) over the last decay_fraction of the steps; constant: lr throughout",
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate / peak (cosine, wsd)")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of all steps spent decaying")
    decay_shape: Literal["linear", "cosine"] = Field("linear", description="wsd: shape of the final decay")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled weight decay, on matrices only (not norms)")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2 (0.95: the usual for LMs)")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0: no clipping")
    eval_every: int = Field(0, ge=0, description="evaluate every this many steps and at the end; 0: only at the end")
    eval_batches: int = Field(8, gt=0, description="fixed val batches a caller builds (shared.corpus.eval_batches)")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every this many steps and at the end; 0: at the end")
    log_every: int = Field(10, gt=0, description="read losses back to the host (bar, NaN check) every this many steps")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16: autocast for forward and loss (weights and optimizer stay float32)"
    )

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_fits(cls, value: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")
        if steps is not None and value >= steps:
            raise ValueError(f"must be smaller than steps ({steps})")  # the error names the key and the value
        return value


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per step; val_loss is NaN where no evaluation ran
    tokens_seen: int
    train_seconds: float  # wall-clock of the training steps, over all resumed runs, without evals and checkpoints
    final_val_loss: float  # after the last step (NaN without val batches)
    resumed_from: int  # the step this call started at (0: a fresh run)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.train_seconds if self.train_seconds > 0 else float("nan")


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """The learning rate of (0-based) step ``step`` as a fraction of ``cfg.lr``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - 1 - cfg.warmup_steps)  # 0 -> 1 at the last step
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    # wsd: stable at the peak, then decay over the last decay_fraction of all steps
    decay_steps = max(1, round(cfg.decay_fraction * cfg.steps))
    decay_start = max(cfg.warmup_steps, cfg.steps - decay_steps)
    if step < decay_start:
        return 1.0
    progress = (step - decay_start + 1) / max(1, cfg.steps - decay_start)  # reaches 1 at the last step
    shape = progress if cfg.decay_shape == "linear" else 0.5 * (1 - math.cos(math.pi * progress))
    return 1.0 - (1 - floor) * min(shape, 1.0)


def cross_entropy(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model(input_ids=x)`` against ``y`` (in float32)."""
    import torch.nn.functional as F

    logits, _ = _forward(model, x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def training_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, plus a transformers MoE's load-balancing loss when the model returns one."""
    import torch.nn.functional as F

    logits, aux = _forward(model, x)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    if aux is not None:
        loss = loss + getattr(model.config, "router_aux_loss_coef", 0.0) * aux.to(loss.device)
    return loss


def evaluate(
    model,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str,
    *,
    dtype: str = "float32",
    loss_fn: Callable | None = None,
) -> float:
    """Mean token cross-entropy over ``batches`` (every token weighs the same); perplexity is
    its exp. The model is put in eval mode and back into the mode it was in."""
    import torch

    loss_fn = loss_fn or cross_entropy
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    try:
        with torch.no_grad(), _autocast(device, dtype):
            for x, y in batches:
                x, y = x.to(device), y.to(device)
                total += loss_fn(model, x, y).double() * y.numel()
                count += y.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches: empty; evaluate needs at least one (x, y) batch")
    return float(total / count)


def train(
    model,
    batches: Sequence | Callable[[int], tuple[torch.Tensor, torch.Tensor]] | Iterable,
    cfg: TrainConfig,
    *,
    device: str,
    out_dir: str | Path | None = None,
    val_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: Callable | None = None,
    seed: int = 0,
    loss_fn: Callable | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps; see the module docstring.

    ``batches``: ``(x, y)`` of step ``s`` as ``batches[s]`` (``corpus.TokenBatches``, a list),
    ``batches(s)``, or the next item of an iterable. ``val_batches``: fixed ``(x, y)`` batches for the evaluations.
    ``progress``: a tqdm-like ``progress(iterable, desc=, total=)``; its bar, if it has
    ``set_postfix``, shows the loss and tokens/s. ``seed`` seeds torch at the start of a
    fresh run (dropout and other randomness in the model; the data order is the batches').
    ``desc`` labels the progress bar.
    """
    import torch

    eval_loss_fn = loss_fn  # None: evaluations measure the cross-entropy alone (no auxiliary loss)
    loss_fn = loss_fn or training_loss
    val_batches = list(val_batches) if val_batches is not None else []
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    model.to(device)
    model.train()
    optimizer = _adamw(model, cfg, device)

    # --- start fresh, or continue from the checkpoint
    state = _load_checkpoint(ckpt_path, cfg, seed) if ckpt_path is not None else None
    if state is None:
        torch.manual_seed(seed)
        start, rows, seconds_before = 0, [], 0.0
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        start, rows, seconds_before = state["step"], state["history"], state["seconds"]
    if start >= cfg.steps:  # finished earlier: nothing to do
        return _result(rows, cfg, seconds_before, resumed_from=start)

    if hasattr(batches, "__getitem__"):  # TokenBatches, a list: batch `step` is batches[step]
        batch_iter = (batches[step] for step in itertools.count(start))
    elif callable(batches):
        batch_iter = (batches(step) for step in itertools.count(start))
    else:  # replay the iterable and skip what the earlier run consumed
        batch_iter = itertools.islice(iter(batches), start, None)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    bar = (progress or progress_bar)(range(start, cfg.steps), desc=desc, total=cfg.steps - start)
    pending: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []  # (step, lr, loss, grad norm) on the device
    paused = 0.0  # seconds spent evaluating and checkpointing, not training
    started = time.perf_counter()

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started - paused

    def flush() -> None:
        """Read the pending losses back (one sync), append their history rows."""
        if not pending:
            return
        values = torch.stack([torch.stack([loss.float(), norm.float()]) for _, _, loss, norm in pending]).tolist()
        now = elapsed()
        for (step, lr, _, _), (loss, norm) in zip(pending, values):
            if not math.isfinite(loss):
                raise FloatingPointError(f"train: loss is {loss} at step {step} (lr {lr:.3g}); lower lr or clip")
            rows.append(dict(step=step, lr=lr, train_loss=loss, grad_norm=norm, val_loss=math.nan,
                             tokens=step * tokens_per_step, seconds=now))
        pending.clear()
        if hasattr(bar, "set_postfix"):
            done = rows[-1]["step"] - start
            speed = done * tokens_per_step / max(now - seconds_before, 1e-9)
            bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", tok_s=f"{speed:,.0f}")

    for step in bar:  # `step` updates done so far; this iteration makes update step + 1
        x, y = next(batch_iter)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if x.shape != (cfg.batch_size, cfg.seq_len):
            want = (cfg.batch_size, cfg.seq_len)
            raise ValueError(f"batches: step {step} gave x of shape {tuple(x.shape)}, cfg wants {want}")
        lr = cfg.lr * lr_multiplier(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(device, cfg.dtype):
            loss = loss_fn(model, x, y)
        loss.backward()
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        else:
            norm = torch.zeros((), device=device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pending.append((step + 1, lr, loss.detach(), norm.detach()))

        done = step + 1
        last = done == cfg.steps
        eval_now = bool(val_batches) and (last or (cfg.eval_every > 0 and done % cfg.eval_every == 0))
        ckpt_now = ckpt_path is not None and (last or (cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0))
        if done % cfg.log_every == 0 or eval_now or ckpt_now:
            flush()
        if eval_now or ckpt_now:
            pause_start, train_seconds = time.perf_counter(), elapsed()
            if eval_now:
                rows[-1]["val_loss"] = evaluate(model, val_batches, device, dtype=cfg.dtype, loss_fn=eval_loss_fn)
            if ckpt_now:
                _save_checkpoint(ckpt_path, model, optimizer, done, rows, train_seconds, cfg, seed)
            paused += time.perf_counter() - pause_start
    flush()
    if hasattr(bar, "close"):
        bar.close()
    return _result(rows, cfg, elapsed(), resumed_from=start)


# --- helpers -------------------------------------------------------------------------


def _adamw(model, cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (embeddings, projections), not on norms and
    biases; the fused kernel on CUDA and CPU (one kernel for all parameters), foreach elsewhere."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = torch.device(device).type in ("cuda", "cpu")
    betas = (cfg.beta1, cfg.beta2)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=1e-8, fused=fused, foreach=None if fused else True)


def _autocast(device: str, dtype: str):
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def _forward(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, aux_loss or None) of a transformers causal LM, or of a module returning logits."""
    import torch

    out = model(input_ids=x)
    if isinstance(out, torch.Tensor):
        return out, None
    return out.logits, getattr(out, "aux_loss", None)


def _save_checkpoint(path: Path, model, optimizer, step: int, rows: list, seconds: float, cfg: TrainConfig, seed: int):
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "history": rows,
        "seconds": seconds,
        "config": cfg.model_dump(mode="json"),
        "seed": seed,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous checkpoint intact


def _load_checkpoint(path: Path, cfg: TrainConfig, seed: int) -> dict[str, Any] | None:
    import torch

    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    have, want = state["config"], cfg.model_dump(mode="json")
    changed = [f"{k}: {have.get(k)!r} -> {want[k]!r}" for k in want if have.get(k) != want[k]]
    if state["seed"] != seed:
        changed.append(f"seed: {state['seed']} -> {seed}")
    if changed:
        raise ValueError(
            f"{path}: written by a run with another config ({'; '.join(changed)}); delete it or use another out_dir"
        )
    return state


def _result(rows: list[dict], cfg: TrainConfig, seconds: float, resumed_from: int) -> TrainResult:
    import pandas as pd

    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    final = history["val_loss"].iloc[-1] if len(history) else math.nan
    return TrainResult(
        history=history,
        tokens_seen=cfg.steps * cfg.batch_size * cfg.seq_len,
        train_seconds=seconds,
        final_val_loss=float(final),
        resumed_from=resumed_from,
    )
