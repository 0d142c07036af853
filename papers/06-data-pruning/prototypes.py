"""The self-supervised prototype pruning metric (Sorscher et al. 2022, Sec. 5), on digits.

The paper embeds ImageNet with a self-supervised model (SwAV), runs k-means in that
embedding and calls an example's cosine distance to its nearest centroid its difficulty:
prototypical (easy) examples sit near a centroid, atypical (hard) ones far from all.
No label is used. Here the embedding is PCA of scikit-learn's 8x8 digits (also
label-free), normalised to the unit sphere so Euclidean distance ranks like cosine
distance.

Comparators: random pruning; two *supervised* metrics — supervised prototypes (distance
to the centroid of the example's own class, the paper's labelled variant) and an
EL2N-style score (the L2 norm of the error of out-of-fold predicted class
probabilities, in the spirit of Paul et al. 2021). The classifier trained on each kept
subset is multinomial logistic regression on the raw pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from shared.progress import silent

Metric = Literal["prototype", "supervised_prototype", "el2n", "random"]
Keep = Literal["hard", "easy"]
Progress = Callable[..., Iterable]

# (metric, which end is kept); "random" has no end.
DEFAULT_ARMS: tuple[tuple[Metric, Keep | None], ...] = (
    ("random", None),
    ("prototype", "hard"),
    ("prototype", "easy"),
    ("supervised_prototype", "hard"),
    ("el2n", "hard"),
)


def unsupervised_embedding(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """PCA to ``n_components`` dimensions, then each row scaled to unit length."""
    if not 0 < n_components <= min(x.shape):
        raise ValueError(f"n_components: must be in [1, {min(x.shape)}], got {n_components}")
    z = PCA(n_components=n_components, random_state=seed).fit_transform(x)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norms > 0.0, norms, 1.0)


def prototype_difficulty(embedding: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Self-supervised prototype score: distance to the nearest k-means centroid
    (larger = farther from every prototype = harder). Uses no labels."""
    km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(embedding)
    return np.min(km.transform(embedding), axis=1)


def supervised_prototype_difficulty(embedding: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Distance to the mean embedding of the example's own class (uses labels)."""
    classes = np.unique(labels)
    centroids = np.stack([embedding[labels == c].mean(axis=0) for c in classes])
    own = centroids[np.searchsorted(classes, labels)]
    return np.linalg.norm(embedding - own, axis=1)


def el2n_difficulty(x: np.ndarray, labels: np.ndarray, c: float, seed: int, folds: int = 5) -> np.ndarray:
    """EL2N-style score: ``|p(x) - onehot(y)|_2`` with ``p`` the class probabilities of a
    logistic regression that did not see the example (``folds``-fold cross-fitting)."""
    classes = np.unique(labels)
    onehot = (labels[:, None] == classes[None, :]).astype(float)
    probs = np.zeros_like(onehot)
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels):
        clf = LogisticRegression(C=c, max_iter=1000).fit(x[train], labels[train])
        probs[np.ix_(held, np.searchsorted(classes, clf.classes_))] = clf.predict_proba(x[held])
    return np.linalg.norm(probs - onehot, axis=1)


def kept_indices(difficulty: np.ndarray, keep_fraction: float, keep: Keep | None, rng: np.random.Generator) -> np.ndarray:
    """Indices kept: the hardest or easiest ``keep_fraction`` by ``difficulty`` (larger =
    harder), or a uniformly random subset when ``keep`` is None (scores then unused)."""
    n_total = len(difficulty)
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction: must be in (0, 1], got {keep_fraction}")
    n_keep = max(1, int(round(keep_fraction * n_total)))
    if keep is None:
        return np.sort(rng.choice(n_total, size=n_keep, replace=False))
    order = np.argsort(difficulty, kind="stable")  # easiest first
    if keep == "hard":
        return np.sort(order[n_total - n_keep :])
    if keep == "easy":
        return np.sort(order[:n_keep])
    raise ValueError(f"keep: must be 'hard', 'easy' or None, got {keep!r}")


def pruning_curves(
    split_fn: Callable[[int], object],
    keep_fractions: Sequence[float],
    seeds: Sequence[int],
    embedding_dim: int,
    n_clusters: int,
    logreg_c: float,
    arms: Sequence[tuple[Metric, Keep | None]] = DEFAULT_ARMS,
    train_fraction: float = 1.0,
    progress: Progress = silent,
) -> pd.DataFrame:
    """Test accuracy of a classifier trained on each kept subset.

    ``split_fn(seed)`` returns a train/test split (``shared.data.Split``); each seed
    re-draws the split, the embedding's k-means and the random subsets. With
    ``train_fraction`` < 1 the initial training set is first a random subset of that
    size (a small initial data set), and every metric is computed on it alone. Rows:
    seed, metric, keep, keep_fraction, n_total, n_kept, classes_kept, accuracy."""
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction: must be in (0, 1], got {train_fraction}")
    # One BLAS/OpenMP thread: these problems are small, and on a 2-core machine two
    # threads made the fits 15-70x slower (measured), not faster.
    with threadpool_limits(limits=1):
        return _pruning_curves(
            split_fn, keep_fractions, seeds, embedding_dim, n_clusters, logreg_c, arms, train_fraction, progress
        )


def _pruning_curves(
    split_fn, keep_fractions, seeds, embedding_dim, n_clusters, logreg_c, arms, train_fraction, progress
) -> pd.DataFrame:
    rows = []
    for seed in progress(list(seeds), desc="digits pruning", total=len(seeds)):
        split = split_fn(int(seed))
        x, y = split.x_train, split.y_train
        if train_fraction < 1.0:
            initial = kept_indices(np.zeros(len(x)), train_fraction, None, np.random.default_rng([int(seed), 7]))
            x, y = x[initial], y[initial]
        emb = unsupervised_embedding(x, embedding_dim, int(seed))
        scores: dict[str, np.ndarray] = {"random": np.zeros(len(x))}
        for metric, _ in arms:
            if metric in scores:
                continue
            if metric == "prototype":
                scores[metric] = prototype_difficulty(emb, n_clusters, int(seed))
            elif metric == "supervised_prototype":
                scores[metric] = supervised_prototype_difficulty(emb, y)
            elif metric == "el2n":
                scores[metric] = el2n_difficulty(x, y, logreg_c, int(seed))
            else:
                raise ValueError(f"metric: unknown {metric!r}")
        rng = np.random.default_rng([int(seed), 6])
        for f in keep_fractions:
            for metric, keep in arms:
                if f >= 1.0 and (metric, keep) != ("random", None):
                    continue  # nothing pruned: every arm is the full set
                idx = kept_indices(scores[metric], f, keep, rng)
                if len(np.unique(y[idx])) < 2:
                    acc = float(np.mean(split.y_test == y[idx][0]))  # one class left: constant guess
                else:
                    clf = LogisticRegression(C=logreg_c, max_iter=1000).fit(x[idx], y[idx])
                    acc = float(clf.score(split.x_test, split.y_test))
                rows.append(
                    {
                        "seed": int(seed),
                        "metric": metric,
                        "keep": keep or "random",
                        "arm": metric if keep is None else f"{metric}_{keep}",
                        "keep_fraction": float(f),
                        "n_total": len(x),
                        "n_kept": len(idx),
                        "classes_kept": int(len(np.unique(y[idx]))),
                        "accuracy": acc,
                    }
                )
    return pd.DataFrame(rows)


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of accuracy over seeds, per arm and keep fraction."""
    out = curves.groupby(["arm", "keep_fraction"], as_index=False).agg(
        accuracy=("accuracy", "mean"),
        accuracy_sem=("accuracy", "sem"),
        classes_kept=("classes_kept", "mean"),
        n_seeds=("seed", "nunique"),
    )
    out["accuracy_sem"] = out["accuracy_sem"].fillna(0.0)
    return out


def arm_accuracy(mean_table: pd.DataFrame, arm: str, keep_fraction: float) -> float:
    """Seed-mean accuracy of one arm at one keep fraction (f = 1 is the random arm)."""
    if keep_fraction >= 1.0:
        arm = "random"
    hit = mean_table[(mean_table["arm"] == arm) & np.isclose(mean_table["keep_fraction"], keep_fraction)]
    if len(hit) != 1:
        raise KeyError(f"no unique row for arm={arm} keep_fraction={keep_fraction}")
    return float(hit["accuracy"].iloc[0])
