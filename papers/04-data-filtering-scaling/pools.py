"""Data pools of different quality, trained on with repeated epochs (Goyal et al. 2024, QQT).

The paper ranks web data by a quality score (T-MARS), cuts it into buckets (top 0-10%,
10-20%, ...) and trains CLIP on pools made of the best k buckets for a budget of samples
seen; a small pool is repeated many times, a large pool less. Here the buckets are made
from one data set by **label noise**: bucket 1 clean, each next bucket noisier. Two data
sets:

* a **teacher-student simulation** (Gaussian inputs, labels = sign of a random teacher,
  a fraction of them flipped): the student's test error is exact
  (angle to the teacher / pi), so no test set adds noise. A faithful simulation of the
  quality-quantity trade-off, not the paper's data;
* scikit-learn's bundled **digits** (real images, nothing downloaded), random labels in
  the noisy buckets, error measured on a clean held-out split.

The student is (multinomial) logistic regression trained by plain SGD, one example per
step, step size ``lr0 / sqrt(t)``, each epoch a fresh permutation of the pool. Compute is
samples seen, so one run gives the whole error curve: the schedule does not depend on
the budget. All runs of a grid (pools x seeds) step together, vectorised over runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.progress import silent

Progress = Callable[..., Iterable]


@dataclass(frozen=True)
class Buckets:
    """One draw of quality buckets: ``x[i]``, ``y[i]`` the examples of bucket ``i``
    (bucket 0 the cleanest), and what the error is measured against."""

    x: list[np.ndarray]  # per bucket [size, d]
    y: list[np.ndarray]  # per bucket: +-1 floats (binary) or class ids (multiclass)
    noise: list[float]  # fraction of labels corrupted in each bucket
    teacher: np.ndarray | None = None  # binary task: the teacher direction
    x_test: np.ndarray | None = None  # multiclass task: clean held-out split
    y_test: np.ndarray | None = None
    n_classes: int = 2


def _corrupt(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(fraction * n) positions, chosen at random (a fixed quality per
    bucket, not a random one)."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=int(round(fraction * n)), replace=False)] = True
    return mask


def teacher_student(n_dim: int, bucket_size: int, noises: Sequence[float], seed: int) -> Buckets:
    """Gaussian inputs, labels sign(teacher . x); bucket ``i`` has ``noises[i]`` of its
    labels flipped."""
    if n_dim < 2 or bucket_size < 1:
        raise ValueError(f"n_dim >= 2 and bucket_size >= 1 needed, got {n_dim}, {bucket_size}")
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal(n_dim)
    xs, ys = [], []
    for noise in noises:
        x = rng.standard_normal((bucket_size, n_dim))
        y = np.sign(x @ teacher)
        y[_corrupt(bucket_size, noise, rng)] *= -1.0
        xs.append(x)
        ys.append(y)
    return Buckets(xs, ys, list(noises), teacher=teacher)


def digits_buckets(bucket_size: int, noises: Sequence[float], test_fraction: float, seed: int) -> Buckets:
    """scikit-learn's digits: disjoint random training buckets of ``bucket_size`` images;
    in bucket ``i`` a fraction ``noises[i]`` of the labels is replaced by a different,
    random class. Pixels centred (train mean) and a constant 1 appended (the bias)."""
    from shared import data

    split = data.digits(test_fraction, seed)
    need = bucket_size * len(noises)
    if need > len(split.y_train):
        raise ValueError(f"bucket_size x buckets = {need} > {len(split.y_train)} training images")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(split.y_train))[:need]
    mean = split.x_train.mean(axis=0)

    def prep(x: np.ndarray) -> np.ndarray:
        return np.hstack([x - mean, np.ones((len(x), 1), dtype=x.dtype)]).astype(np.float64)

    k = split.n_classes
    xs, ys = [], []
    for i, noise in enumerate(noises):
        idx = order[i * bucket_size : (i + 1) * bucket_size]
        y = split.y_train[idx].copy()
        flip = _corrupt(bucket_size, noise, rng)
        y[flip] = (y[flip] + rng.integers(1, k, size=flip.sum())) % k  # a different class
        xs.append(prep(split.x_train[idx]))
        ys.append(y)
    return Buckets(xs, ys, list(noises), x_test=prep(split.x_test), y_test=split.y_test, n_classes=k)


def pool(b: Buckets, members: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The union of the named buckets."""
    return np.concatenate([b.x[i] for i in members]), np.concatenate([b.y[i] for i in members])


ORDER_CHUNK = 8192  # steps of visiting order built at a time


def visit_order(size: int, seed: int, start: int, stop: int) -> np.ndarray:
    """Indices visited at steps ``start..stop-1`` of SGD over a pool of ``size``: epoch e is
    a permutation drawn from ``(seed, e)`` alone, so any slice is the same whoever asks."""
    first, last = start // size, (stop - 1) // size
    idx = np.concatenate([np.random.default_rng([seed, e]).permutation(size) for e in range(first, last + 1)])
    return idx[start - first * size : stop - first * size]


def checkpoints(first: int, last: int, per_octave: int) -> np.ndarray:
    """Samples-seen values at which error is recorded: log-spaced, ``per_octave`` per
    doubling, from ``first`` to ``last`` (both included), unique integers."""
    if not 0 < first <= last or per_octave < 1:
        raise ValueError(f"need 0 < first <= last and per_octave >= 1, got {first}, {last}, {per_octave}")
    octaves = np.log2(last / first)
    grid = first * 2.0 ** np.linspace(0.0, octaves, int(round(octaves * per_octave)) + 1)
    return np.unique(np.round(grid).astype(np.int64))


def sgd_curves(
    datasets: Sequence[tuple[np.ndarray, np.ndarray]],
    evaluate: Sequence[Callable[[np.ndarray], float]],
    at: np.ndarray,
    lr0: float,
    seeds: Sequence[int],
    n_classes: int = 2,
    progress: Progress = silent,
) -> np.ndarray:
    """Train one logistic-regression student per dataset by SGD (one example a step,
    ``lr0/sqrt(t)``, a fresh permutation each epoch drawn from ``seeds[r]``) and return
    ``[runs, len(at)]`` errors, ``evaluate[r](w)`` after ``at[j]`` samples seen.

    Binary (``n_classes == 2``, labels +-1): ``w`` is ``[d]``, logistic loss.
    Multiclass: ``w`` is ``[d, n_classes]``, softmax cross-entropy. All runs step
    together (vectorised), so the cost is one Python loop over ``max(at)`` steps."""
    r_count = len(datasets)
    steps = int(max(at))
    dim = datasets[0][0].shape[1]
    pmax = max(len(y) for _, y in datasets)
    x = np.zeros((r_count, pmax, dim))
    for r, (xr, _) in enumerate(datasets):
        x[r, : len(xr)] = xr
    sizes = [len(yr) for _, yr in datasets]
    rows = np.arange(r_count)
    record = {int(n): j for j, n in enumerate(at)}
    out = np.empty((r_count, len(at)))
    lrs = lr0 / np.sqrt(np.arange(1, steps + 1))
    binary = n_classes == 2
    y = np.zeros((r_count, pmax), dtype=np.float64 if binary else np.int64)
    for r, (_, yr) in enumerate(datasets):
        y[r, : len(yr)] = yr
    w = np.zeros((r_count, dim) if binary else (r_count, dim, n_classes))
    eye = np.eye(n_classes)
    bar = iter(progress(range(steps), desc="SGD steps", total=steps))
    for c0 in range(0, steps, ORDER_CHUNK):
        c1 = min(c0 + ORDER_CHUNK, steps)
        # the visiting order is built a chunk at a time: [R, steps] at once is GBs at gpu scale
        order = np.stack([visit_order(sizes[r], seeds[r], c0, c1) for r in range(r_count)])
        for i, t in enumerate(range(c0, c1)):
            next(bar, None)
            idx = order[:, i]
            xt = x[rows, idx]
            if binary:
                yt = y[rows, idx]
                margin = yt * np.einsum("rd,rd->r", w, xt)
                # d/dw log(1 + exp(-m)) = -y x sigmoid(-m); sigmoid(-m) = 0.5 (1 - tanh(m/2)) is overflow-free
                w += (lrs[t] * yt * 0.5 * (1.0 - np.tanh(0.5 * margin)))[:, None] * xt
            else:
                logits = np.einsum("rd,rdk->rk", xt, w)
                logits -= logits.max(axis=1, keepdims=True)
                p = np.exp(logits)
                p /= p.sum(axis=1, keepdims=True)
                w += lrs[t] * xt[:, :, None] * (eye[y[rows, idx]] - p)[:, None, :]
            j = record.get(t + 1)
            if j is not None:
                out[:, j] = [evaluate[r](w[r]) for r in range(r_count)]
    next(bar, None)  # let the bar close
    return out


def angle_error(teacher: np.ndarray) -> Callable[[np.ndarray], float]:
    """Exact test error of a linear student on Gaussian inputs: angle to the teacher / pi."""
    unit = teacher / np.linalg.norm(teacher)

    def err(w: np.ndarray) -> float:
        norm = np.linalg.norm(w)
        if norm == 0.0:
            return 0.5
        return float(np.arccos(np.clip(w @ unit / norm, -1.0, 1.0)) / np.pi)

    return err


def test_error(x_test: np.ndarray, y_test: np.ndarray) -> Callable[[np.ndarray], float]:
    """Misclassification rate of a multiclass linear student on a held-out split."""

    def err(w: np.ndarray) -> float:
        return float(np.mean(np.argmax(x_test @ w, axis=1) != y_test))

    return err


def run_grid(
    make: Callable[[int], Buckets],
    seeds: Sequence[int],
    at: np.ndarray,
    lr0: float,
    progress: Progress = silent,
) -> pd.DataFrame:
    """Every single bucket and every top-k pool (k >= 2), for each seed: a tidy table
    with columns seed, run (``bucket{i}`` or ``top{k}``), kind, k (buckets in it),
    first (its first bucket), pool_size, n (samples seen), error. ``top1`` is
    ``bucket1``'s run (the same data and order), listed under both names."""
    datasets, evaluate, labels, run_seeds = [], [], [], []
    n_classes = 2
    for seed in seeds:
        b = make(seed)
        n_classes, n_buckets = b.n_classes, len(b.x)
        ev = angle_error(b.teacher) if b.teacher is not None else test_error(b.x_test, b.y_test)
        specs = [("bucket", [i]) for i in range(n_buckets)] + [("top", list(range(k))) for k in range(2, n_buckets + 1)]
        for j, (kind, members) in enumerate(specs):
            datasets.append(pool(b, members))
            evaluate.append(ev)
            labels.append((seed, kind, members))
            run_seeds.append(seed * 1000 + j)  # visiting order: fixed per (seed, run)
    errors = sgd_curves(datasets, evaluate, at, lr0, run_seeds, n_classes=n_classes, progress=progress)
    frames = []
    for (seed, kind, members), curve, (_, yr) in zip(labels, errors, datasets):
        name = f"bucket{members[0] + 1}" if kind == "bucket" else f"top{len(members)}"
        names = [name, "top1"] if name == "bucket1" else [name]
        for nm in names:
            frames.append(
                pd.DataFrame(
                    {
                        "seed": seed,
                        "run": nm,
                        "kind": "top" if nm.startswith("top") else "bucket",
                        "k": len(members),
                        "first": members[0] + 1,
                        "pool_size": len(yr),
                        "n": at,
                        "error": curve,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def mean_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed means (and standard errors) per run and samples seen."""
    g = runs.groupby(["run", "kind", "k", "first", "pool_size", "n"], as_index=False)["error"]
    out = g.mean()
    out["error_sem"] = g.sem()["error"].fillna(0.0).to_numpy()
    return out


def best_pools(curves: pd.DataFrame, budgets: Sequence[int], column: str = "error") -> pd.DataFrame:
    """For each budget, the top-k pool with the lowest ``column`` and every pool's value
    (columns n, best_k, top1, top2, ...)."""
    tops = curves[curves["kind"] == "top"]
    wide = tops.pivot_table(index="n", columns="k", values=column).loc[list(budgets)]
    out = pd.DataFrame({"n": wide.index.to_numpy(), "best_k": wide.idxmin(axis=1).to_numpy().astype(int)})
    for k in wide.columns:
        out[f"top{k}"] = wide[k].to_numpy()
    return out
