"""Data sources with different defects, mixtures of them, and the learner (paper 09).

The paper's setting: a buyer chooses a mixture ``p`` (a point of the simplex) of ``k``
data sources for a budget of ``n`` training samples, but each source *reveals* only a few
pilot samples before the purchase. Here the sources are built from scikit-learn's 8x8
digits (real handwriting, bundled offline), split once into a clean validation set (the
target distribution) and a pool; each source is the pool with its own defect:

    clean_0to6   correct labels, but only the digits 0-6 (a provider with a narrow catalogue)
    label_noise  every digit, a fixed share of labels flipped to another class
    rotated      every digit, correct labels, images rotated (a covariate shift)

No single source is best: the clean one lacks three classes, the others are noisy or
shifted, so the best mixture is inside the simplex and moves with ``n``. All sources are
transforms of the same pool (a provider's "copy" of the digits), so mixtures can contain
two versions of one image; the validation images are never in any source.

The learner is multinomial logistic regression on the 64 pixels, on one BLAS thread
(on a shared 2-core machine a second thread only adds contention).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

SOURCE_NAMES = ("clean_0to6", "label_noise", "rotated")


@dataclass(frozen=True)
class Source:
    name: str
    x: np.ndarray  # [m, 64] pixels in [0, 1]
    y: np.ndarray  # [m] labels as the provider sells them (maybe wrong)


@dataclass(frozen=True)
class Market:
    """The sources, each one's revealed pilot samples, and the validation set."""

    sources: tuple[Source, ...]
    revealed: tuple[np.ndarray, ...]  # indices into each source: what the provider shows before the purchase
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def k(self) -> int:
        return len(self.sources)

    def source_sizes(self) -> np.ndarray:
        return np.array([len(s.y) for s in self.sources])


def digits_market(
    val_size: int,
    label_noise: float,
    rotation_deg: float,
    clean_classes: int,
    revealed: int,
    seed: int,
) -> Market:
    """The three digit sources of the module docstring, ``revealed`` pilot samples per
    source (a random subset, fixed by ``seed``), and a clean validation set of ``val_size``."""
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise: must be in [0, 1), got {label_noise}")
    if not 2 <= clean_classes <= 10:
        raise ValueError(f"clean_classes: must be in [2, 10], got {clean_classes}")
    bunch = load_digits()
    x = bunch.data / 16.0
    y = bunch.target.astype(np.int64)
    x_pool, x_val, y_pool, y_val = train_test_split(x, y, test_size=val_size, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)

    keep = y_pool < clean_classes
    clean = Source(SOURCE_NAMES[0], x_pool[keep], y_pool[keep])

    flip = rng.random(len(y_pool)) < label_noise
    wrong = (y_pool + rng.integers(1, 10, len(y_pool))) % 10  # a uniformly random *other* class
    noisy = Source(SOURCE_NAMES[1], x_pool.copy(), np.where(flip, wrong, y_pool))

    images = x_pool.reshape(-1, 8, 8)
    turned = ndimage.rotate(images, rotation_deg, axes=(1, 2), reshape=False, order=1, mode="constant")
    rotated = Source(SOURCE_NAMES[2], np.clip(turned, 0.0, 1.0).reshape(-1, 64), y_pool.copy())

    sources = (clean, noisy, rotated)
    shown = tuple(np.sort(rng.choice(len(s.y), size=min(revealed, len(s.y)), replace=False)) for s in sources)
    return Market(sources, shown, x_val, y_val)


def simplex_grid(k: int, steps: int) -> np.ndarray:
    """Every mixture with coordinates in {0, 1/steps, ..., 1} that sums to 1: [C(steps+k-1, k-1), k]."""
    if k < 2 or steps < 1:
        raise ValueError(f"simplex_grid: need k >= 2 and steps >= 1, got k={k}, steps={steps}")
    points = [c for c in itertools.product(range(steps + 1), repeat=k - 1) if sum(c) <= steps]
    return np.array([[*c, steps - sum(c)] for c in points], dtype=float) / steps


def counts(p: np.ndarray, n: int) -> np.ndarray:
    """Samples per source for mixture ``p`` and size ``n``: largest remainders, summing to n."""
    p = np.asarray(p, dtype=float)
    raw = p * n
    base = np.floor(raw + 1e-9).astype(int)
    short = n - base.sum()
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:short]] += 1
    return base


def draw(market: Market, p: np.ndarray, n: int, rng: np.random.Generator, revealed_only: bool):
    """A training set of ``n`` samples mixed by ``p``: (x, y, source index of each row).
    ``revealed_only``: draw from the pilot samples only (what the buyer can see)."""
    xs, ys, origin = [], [], []
    for i, (source, c) in enumerate(zip(market.sources, counts(p, n))):
        if c == 0:
            continue
        pool = market.revealed[i] if revealed_only else np.arange(len(source.y))
        if c > len(pool):
            where = "revealed samples" if revealed_only else "samples"
            raise ValueError(f"mixture {np.round(p, 3)} at n={n} needs {c} {where} of {source.name}, it has {len(pool)}")
        idx = rng.choice(pool, size=c, replace=False)
        xs.append(source.x[idx])
        ys.append(source.y[idx])
        origin.append(np.full(c, i))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(origin)


def feasible(market: Market, p: np.ndarray, n: int, revealed_only: bool) -> bool:
    have = np.array([len(r) for r in market.revealed]) if revealed_only else market.source_sizes()
    return bool(np.all(counts(p, n) <= have))


def train_accuracy(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, c: float) -> float:
    """Fit the learner on (x, y), return its accuracy on the validation set."""
    with threadpool_limits(limits=1):
        model = LogisticRegression(C=c, max_iter=500).fit(x, y)
        return float(model.score(x_val, y_val))
