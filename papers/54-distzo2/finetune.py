"""The convergence experiment: MeZO against a first-order (AdamW) fine-tune on the same data.

:func:`finetune` runs ``steps`` steps of either optimizer on ``batches[0..steps-1]`` (the same
batches for both), evaluating a fixed held-out set every ``eval_every`` steps. :func:`sweep_lr`
chooses MeZO's learning rate before the measured run, from short runs scored on the TRAIN split
only (the held-out text is never seen by the choice).
"""

from __future__ import annotations

import copy
from typing import Callable, Literal, Sequence

import torch

from paper54 import mezo

Method = Literal["mezo", "adamw"]


def finetune(model, batches, steps: int, method: Method, lr: float, eps: float, seed: int,
             held: Sequence = (), eval_every: int = 0, progress: Callable | None = None) -> tuple[list[dict], list[dict]]:
    """Fine-tune ``model`` in place; returns (held-out curve rows, per-step train rows).

    ``mezo``: MeZO-SGD (:func:`paper54.mezo.mezo_step`, train loss = mean of L+ and L-).
    ``adamw``: torch's AdamW at a constant ``lr``, no weight decay, on the same batches."""
    if method not in ("mezo", "adamw"):
        raise ValueError(f"method: must be mezo or adamw, got {method!r}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr}")
    curve = [{"step": 0, "heldout_loss": mezo.eval_loss(model, held)}] if held else []
    rows = []
    params = mezo.indexed(model)
    cfg = mezo.ZOConfig(eps=eps, lr=lr, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0) if method == "adamw" else None
    it = range(steps) if progress is None else progress(range(steps), desc=f"{method} fine-tune (lr {lr:g})")
    for t in it:
        x, y = batches[t]
        if opt is None:
            lp, lm_, g = mezo.mezo_step(params, lambda: mezo.lm_loss(model, x, y), cfg, t)
            rows.append({"step": t, "train_loss": (lp + lm_) / 2, "g": g})
        else:
            opt.zero_grad(set_to_none=True)
            loss = mezo.lm_loss(model, x, y)
            loss.backward()
            opt.step()
            rows.append({"step": t, "train_loss": float(loss.detach())})
        if held and ((t + 1) % max(eval_every, 1) == 0 or t + 1 == steps):
            curve.append({"step": t + 1, "heldout_loss": mezo.eval_loss(model, held)})
    return curve, rows


def sweep_lr(model, batches, score_batches: Sequence, lrs: Sequence[float], steps: int, eps: float,
             seed: int) -> tuple[float, list[dict]]:
    """MeZO's lr chosen on the train split: for each lr, ``steps`` MeZO steps on a copy of ``model``
    (``model`` itself is untouched), scored by the loss on ``score_batches`` (train-split batches).
    Returns (the lr of the lowest score, smallest lr on ties; the rows lr / loss_before / loss_after)."""
    if not lrs:
        raise ValueError("conv_sweep_lrs: needs at least one learning rate")
    before = mezo.eval_loss(model, score_batches)
    rows = []
    for lr in lrs:
        trial = copy.deepcopy(model)
        finetune(trial, batches, steps, "mezo", lr, eps, seed)
        rows.append({"lr": float(lr), "train_loss_before": before, "train_loss_after": mezo.eval_loss(trial, score_batches)})
    best = min(rows, key=lambda r: (r["train_loss_after"], r["lr"]))
    return best["lr"], rows
