"""(b) The three tasks of the training study, each trained by shared.trainer with every Linear
fake-quantised by a technique (paper28.techniques), and the loss gap to FP32.

    table = tasks.run_grid(task, names, seeds, block=32, device="cpu")   # one row per (config, seed)
    gaps = tasks.loss_gaps(table)                                        # + loss_gap vs fp32, same seed

- ``regression``: linear regression (one nn.Linear) on scikit-learn's diabetes set, features and
  target standardised on the training split; loss = test MSE.
- ``mlp``: a GELU MLP on the 8x8 digits (shared.data.digits); loss = test cross-entropy.
- ``lm``: a Llama-style LM (shared.zoo) on the corpus artifact's tokens
  (shared.corpus.training_data); loss = validation cross-entropy. The output head (tied to the
  embedding) stays in FP32, as FP4 training recipes keep it.

The loss is measured with the model as trained (its forward still quantised). For the
non-LM tasks, the trainer's ``seq_len`` is the feature count (the x of a batch is [B, features]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from paper28 import techniques
from shared import trainer

TASKS = ("regression", "mlp", "lm")


@dataclass
class Task:
    """What a training run needs: a fresh model per seed, batches, val batches, the loss, the config."""

    name: str
    make_model: Callable[[int], nn.Module]
    batches: Callable[[int], Callable | object]  # seed -> trainer batches
    val: list
    loss_fn: Callable | None
    cfg: trainer.TrainConfig
    example: object  # one training batch's input (a tensor, or model keyword arguments): GEMM shapes
    skip: tuple[str, ...] = ()


def _minibatches(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int):
    """batch(step): a random minibatch (full batch if batch >= n), a pure function of (seed, step)."""
    n = len(x)

    def get(step: int):
        if batch >= n:
            return x, y
        idx = torch.from_numpy(np.random.default_rng([seed, step]).choice(n, batch, replace=False))
        return x[idx], y[idx]

    return get


def _mse(model, x, y):
    return F.mse_loss(model(x), y)


def _ce(model, x, y):
    return F.cross_entropy(model(x), y)


def regression(steps: int, lr: float, batch: int, seed: int = 0) -> Task:
    """Linear regression on sklearn's diabetes (442 x 10), 25% test split, standardised (the Linear
    sits in a Sequential so that swap_linears, which replaces children, reaches it)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed)
    mu, sd, ym, ys = x_tr.mean(0), x_tr.std(0), y_tr.mean(), y_tr.std()
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    xtr, xte = t((x_tr - mu) / sd), t((x_te - mu) / sd)
    ytr, yte = t((y_tr - ym) / ys)[:, None], t((y_te - ym) / ys)[:, None]
    b = min(batch, len(xtr))
    cfg = trainer.TrainConfig(steps=steps, batch_size=b, seq_len=xtr.shape[1], lr=lr, weight_decay=0.0,
                              grad_clip=0.0, log_every=max(1, steps // 4))
    return Task("regression", lambda s: _seeded(s, lambda: nn.Sequential(nn.Linear(xtr.shape[1], 1))),
                lambda s: _minibatches(xtr, ytr, b, s), [(xte, yte)], _mse, cfg, xtr[:b])


def mlp(steps: int, lr: float, batch: int, hidden: int, seed: int = 0) -> Task:
    """A 64-hidden-hidden-10 GELU MLP on digits (shared.data.digits)."""
    from shared import data

    d = data.digits(seed=seed)
    xtr, ytr = torch.from_numpy(d.x_train), torch.from_numpy(d.y_train)
    xte, yte = torch.from_numpy(d.x_test), torch.from_numpy(d.y_test)

    def make():
        return nn.Sequential(nn.Linear(64, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 10))

    cfg = trainer.TrainConfig(steps=steps, batch_size=batch, seq_len=64, lr=lr, log_every=max(1, steps // 4))
    return Task("mlp", lambda s: _seeded(s, make), lambda s: _minibatches(xtr, ytr, batch, s), [(xte, yte)], _ce, cfg,
                xtr[:batch])


def lm(corpus_dir, spec_kw: dict, steps: int, lr: float, batch: int, seq_len: int, eval_batches: int,
       quantize_head: bool, device: str = "cpu") -> Task:
    """A zoo Llama LM (``spec_kw``: ModelSpec fields but vocab_size and max_seq_len) on the corpus."""
    from shared import corpus, zoo

    vocab, _, val = corpus.training_data(corpus_dir, batch, seq_len, eval_batches, 0, device=device)
    spec = zoo.ModelSpec(vocab_size=vocab, max_seq_len=seq_len, **spec_kw)
    cfg = trainer.TrainConfig(steps=steps, batch_size=batch, seq_len=seq_len, lr=lr, eval_batches=eval_batches,
                              warmup_steps=min(steps // 10, 50), log_every=max(1, min(10, steps // 4)))

    def batches(s):
        return corpus.TokenBatches(corpus.load_tokens(corpus_dir, "train"), batch, seq_len, seed=s, device=device)

    return Task("lm", lambda s: zoo.build(spec, seed=s), batches, val, None, cfg, {"input_ids": val[0][0]},
                () if quantize_head else ("lm_head",))


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def run_one(task: Task, name: str, seed: int, block: int, device: str = "cpu", e8m0_rule: str = "ocp",
            progress=None) -> dict:
    """Train one (technique, seed) from scratch; the row of the results table."""
    model = task.make_model(seed).to(device)
    tech = techniques.parse(name)
    techniques.quantize_model(model, tech, block, seed, task.skip, e8m0_rule, device)
    try:
        res = trainer.train(model, task.batches(seed), task.cfg, device=device, val_batches=task.val, seed=seed,
                            loss_fn=task.loss_fn, progress=progress, desc=f"{task.name} {name} s{seed}")
    except FloatingPointError as exc:  # diverged: kept as a row with NaN losses, not a failed notebook
        print(f"{task.name} {name} seed {seed}: {exc}")
        return {"task": task.name, "config": name, "seed": seed, "val_loss": float("nan"),
                "train_loss": float("nan"), "train_seconds": float("nan")}
    return {"task": task.name, "config": name, "seed": seed, "val_loss": float(res.final_val_loss),
            "train_loss": float(res.history["train_loss"].iloc[-1]), "train_seconds": res.train_seconds}


def run_grid(task: Task, names: list[str], seeds: list[int], block: int, device: str = "cpu",
             e8m0_rule: str = "ocp", progress=None) -> pd.DataFrame:
    """Every (config, seed); fp32 is always run (the gaps need it)."""
    names = [techniques.BASELINE] + [n for n in names if n != techniques.BASELINE]
    quiet = lambda it, **kw: it  # noqa: E731  (one bar for the grid, not one per run)
    jobs = [(n, s) for n in names for s in seeds]
    rows = [run_one(task, n, s, block, device, e8m0_rule, quiet) for n, s in (progress or quiet)(jobs, desc=task.name, total=len(jobs))]
    return pd.DataFrame(rows)


def gemm_shapes(task: Task) -> pd.DataFrame:
    """(task, M, K, N) of every quantised Linear of one training step of the task's model: one
    example row through a CPU copy of the model (cheap at any size), M scaled by the batch."""
    from paper28 import overhead

    ex = task.example
    one = {k: v[:1].cpu() for k, v in ex.items()} if isinstance(ex, dict) else ex[:1].cpu()
    batch = len(next(iter(ex.values())) if isinstance(ex, dict) else ex)
    shapes = overhead.gemm_shapes(task.make_model(0), one, task.skip)
    return pd.DataFrame([{"task": task.name, "M": m * batch, "K": k, "N": n} for m, k, n in shapes])


def loss_gaps(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``loss_gap`` = val_loss - the fp32 run's val_loss (same task and seed)."""
    base = table[table["config"] == techniques.BASELINE].set_index(["task", "seed"])["val_loss"]
    out = table.copy()
    out["loss_gap"] = out["val_loss"].to_numpy() - base.reindex(pd.MultiIndex.from_frame(out[["task", "seed"]])).to_numpy()
    return out
