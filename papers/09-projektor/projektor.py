"""Projektor (Kang, Just, Sahu, Jia; NeurIPS 2023): performance of a data mixture from
the pilot samples of partially revealed sources, projected to larger data, and the
mixture chosen by gradient ascent on that projection.

Stage 1 — performance at pilot size ``n_s`` from the optimal-transport distance. For a
mixture ``p`` of ``k`` sources, draw ``n_s`` revealed samples by ``p`` and compute the
label-aware OT distance to the validation set (exact OT, ``ot.emd``, with cost
``|x - x'|^2 / scale + lambda * 1[y != y']`` — a cheap stand-in for the paper's OTDD, whose
label distance is itself an OT distance between classes). The learner's performance is
then a linear function of features that let the OT coefficient depend on the mixture.
The authors' code (``Projector.prepare_features``) uses, with ``s_i`` the free mixing
coordinates ``p_1 .. p_{k-1}``:

    [OT, s_i, s_i * OT, s_i^2 * OT]      (for k = 3 the 7 features of the repository)

fitted by least squares (with an intercept) on trained pilot mixtures at ``n_0`` and,
separately, at ``n_1``. Predicting any other mixture needs its OT distance only — no
training.

Stage 2 — the parameter-free projection (the paper's mapping "inspired by neural scaling
laws"): performance measured (or predicted) at ``n_0`` and ``n_1`` is extended linearly
in ``ln n``:

    perf(n) = [ln(n/n_0) perf(n_1) - ln(n/n_1) perf(n_0)] / ln(n_1/n_0)

Applied to the log of the error rate, as the authors' code does (``get_model_log_err``),
this is the pure power law ``err = A n^-alpha`` through the two pilot points.

Selection — the gradient of OT with respect to the mixture comes free from the dual
potentials ``f`` of the OT problem (envelope theorem): raising the weight of source ``i``
changes OT at the rate of source ``i``'s mean potential. The potentials are defined up to
a constant; the paper's *calibrated gradient* removes it by comparing a source with the
others (``calib_i = mean_{x in i} f_x - mean_{x not in i} f_x``: mass moved into source
``i`` from all others in proportion). Chained through stage 1 and the projection, it is
the gradient of the projected performance; steps are projected onto the simplex.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import ot
from sklearn.linear_model import LinearRegression

from shared.progress import silent


# ----------------------------------------------------------------------------- stage 2


def project(n, n0: float, n1: float, perf0, perf1):
    """The paper's parameter-free projection from pilot sizes n0 < n1 to size n (any n > 0).
    Exact for every curve linear in ln n; arrays broadcast."""
    if not 0 < n0 < n1:
        raise ValueError(f"pilot sizes: need 0 < n0 < n1, got n0={n0}, n1={n1}")
    n = np.asarray(n, dtype=float)
    if np.any(n <= 0):
        raise ValueError("target size n: must be > 0")
    return (np.log(n / n0) * np.asarray(perf1) - np.log(n / n1) * np.asarray(perf0)) / np.log(n1 / n0)


def to_perf(accuracy, target: str, n_val: int):
    """Accuracy -> the quantity stage 1 regresses and stage 2 projects."""
    accuracy = np.asarray(accuracy, dtype=float)
    if target == "accuracy":
        return accuracy
    floor = 0.5 / n_val  # a perfect score on n_val points is not an error rate of 0
    return np.log(np.maximum(1.0 - accuracy, floor))


def to_accuracy(perf, target: str):
    perf = np.asarray(perf, dtype=float)
    return np.clip(perf, 0.0, 1.0) if target == "accuracy" else 1.0 - np.exp(np.minimum(perf, 0.0))


# ----------------------------------------------------------------------------- OT


def cost_matrix(x, y, x_val, y_val, scale: float, label_cost: float) -> np.ndarray:
    """Label-aware ground cost: squared distance (divided by ``scale``) + ``label_cost`` if labels differ."""
    m = ot.dist(np.asarray(x, float), np.asarray(x_val, float), metric="sqeuclidean") / scale
    return m + label_cost * (np.asarray(y)[:, None] != np.asarray(y_val)[None, :])


def feature_scale(x_val: np.ndarray) -> float:
    """Median squared distance between validation points: puts the pixel cost at O(1)."""
    d = ot.dist(x_val, x_val, metric="sqeuclidean")
    return float(np.median(d[np.triu_indices(len(x_val), 1)]))


@dataclass(frozen=True)
class Transport:
    distance: float  # OT(training set, validation set)
    f: np.ndarray  # dual potential of each training sample (c-transform of g: defined for zero mass too)
    g: np.ndarray  # dual potential of each validation sample


def transport(x, y, x_val, y_val, scale: float, label_cost: float, weights=None) -> Transport:
    """Exact OT between the (weighted, default uniform) training set and the uniform validation set."""
    cost = cost_matrix(x, y, x_val, y_val, scale, label_cost)
    a = np.full(len(cost), 1.0 / len(cost)) if weights is None else np.asarray(weights, float)
    b = np.full(cost.shape[1], 1.0 / cost.shape[1])
    _, log = ot.emd(a, b, cost, log=True, numItermax=1_000_000)
    g = np.asarray(log["v"], float)
    f = np.min(cost - g[None, :], axis=1)  # c-transform: equals the solver's f where mass moves
    return Transport(float(log["cost"]), f, g)


def c_transform(x, y, x_val, y_val, g, scale: float, label_cost: float) -> np.ndarray:
    """Dual potential of points that carry no mass (e.g. samples of a source absent from p)."""
    return np.min(cost_matrix(x, y, x_val, y_val, scale, label_cost) - np.asarray(g)[None, :], axis=1)


def calibrated_gradient(f: np.ndarray, origin: np.ndarray, k: int) -> np.ndarray:
    """The paper's calibrated gradient, per source: (1/n_i)(sum_{x in i} f_x - n_i/(N - n_i) sum_{x not in i} f_x),
    i.e. the rate of change of OT when mass moves into source i from all other samples in
    proportion. 0 for a source that is absent or the only one (as in the authors' code)."""
    f, origin = np.asarray(f, float), np.asarray(origin)
    total, big_n = f.sum(), len(f)
    out = np.zeros(k)
    for i in range(k):
        n_i = int(np.sum(origin == i))
        if n_i == 0 or n_i == big_n:
            continue
        part = f[origin == i].sum()
        out[i] = (part - (total - part) * n_i / (big_n - n_i)) / n_i
    return out


def tangent_gradient(source_means: np.ndarray) -> np.ndarray:
    """Gradient of OT on the simplex from each source's mean potential m_i: m - mean(m).
    (In terms of the calibrated gradient: (1 - p_i) calib_i = m_i - sum_j p_j m_j, the same
    vector up to a constant; the constant is irrelevant on the simplex.)"""
    m = np.asarray(source_means, float)
    return m - m.mean()


def project_onto_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {p >= 0, sum p = 1} (Duchi et al. 2008)."""
    v = np.asarray(v, float)
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u * np.arange(1, len(v) + 1) > css)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


# ----------------------------------------------------------------------------- stage 1


def features(p: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """[OT, s_i, s_i * OT, s_i^2 * OT] for the free coordinates s = p[:, :-1]: [m, 1 + 3(k-1)]."""
    p = np.atleast_2d(np.asarray(p, float))
    d = np.asarray(distance, float).reshape(-1, 1)
    s = p[:, :-1]
    return np.hstack([d, s, s * d, s**2 * d])


def feature_gradient(p: np.ndarray, distance: float, coef: np.ndarray, ot_grad: np.ndarray) -> np.ndarray:
    """d(model)/dp for one mixture, chaining the OT gradient ``ot_grad`` (per source) through
    the features; the explicit terms depend on the free coordinates p_1..p_{k-1} only."""
    k = len(p)
    s = np.asarray(p[:-1], float)
    b_ot, b_s, b_sd, b_s2d = coef[0], coef[1:k], coef[k : 2 * k - 1], coef[2 * k - 1 :]
    multiplier = b_ot + b_sd @ s + b_s2d @ s**2  # d(model)/d(OT)
    grad = multiplier * np.asarray(ot_grad, float)
    grad[:-1] += b_s + (b_sd + 2.0 * b_s2d * s) * distance
    return grad


@dataclass(frozen=True)
class Stage1:
    """perf ~ features(p, OT) at one pilot size."""

    n: int
    model: LinearRegression

    def predict(self, p, distance) -> np.ndarray:
        return self.model.predict(features(p, distance))

    @property
    def coef(self) -> np.ndarray:
        return self.model.coef_


def fit_stage1(n: int, p: np.ndarray, distance: np.ndarray, perf: np.ndarray) -> Stage1:
    """Least squares of perf on the features, one row per trained pilot set."""
    return Stage1(n, LinearRegression().fit(features(p, distance), np.asarray(perf, float)))


# ----------------------------------------------------------------------------- both stages


Sampler = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Projektor:
    """Both stages: stage-1 models at n0 and n1, and how to draw pilot sets and measure OT."""

    low: Stage1  # at n0
    high: Stage1  # at n1
    draw: Sampler  # (p, n, rng) -> x, y, source of each row: from the *revealed* samples only
    revealed: Sequence[tuple[np.ndarray, np.ndarray]]  # per source: (x, y) of its pilot samples (for absent sources' potentials)
    x_val: np.ndarray
    y_val: np.ndarray
    scale: float
    label_cost: float
    draws: int  # OT draws averaged per (mixture, size)

    @property
    def n0(self) -> int:
        return self.low.n

    @property
    def n1(self) -> int:
        return self.high.n

    def _ot(self, p, n, rng, with_gradient: bool):
        distances, grads = [], []
        for _ in range(self.draws):
            x, y, origin = self.draw(p, n, rng)
            t = transport(x, y, self.x_val, self.y_val, self.scale, self.label_cost)
            distances.append(t.distance)
            if with_gradient:
                means = np.empty(len(p))
                for i in range(len(p)):
                    if np.any(origin == i):
                        means[i] = t.f[origin == i].mean()
                    else:  # absent source: potentials of its revealed samples, at zero mass
                        xi, yi = self.revealed[i]
                        means[i] = c_transform(xi, yi, self.x_val, self.y_val, t.g, self.scale, self.label_cost).mean()
                grads.append(tangent_gradient(means))
        return float(np.mean(distances)), (np.mean(grads, axis=0) if with_gradient else None)

    def predict_pilots(self, p, rng) -> tuple[float, float, float, float]:
        """(perf at n0, perf at n1, OT at n0, OT at n1) predicted for mixture p, without training."""
        d0, _ = self._ot(p, self.n0, rng, False)
        d1, _ = self._ot(p, self.n1, rng, False)
        return float(self.low.predict(p, [d0])[0]), float(self.high.predict(p, [d1])[0]), d0, d1

    def predict(self, p, n, rng) -> float:
        """Projected perf at size n for mixture p."""
        perf0, perf1, _, _ = self.predict_pilots(p, rng)
        return float(project(n, self.n0, self.n1, perf0, perf1))

    def value_and_gradient(self, p, n, rng) -> tuple[float, np.ndarray]:
        """Projected perf at n and its gradient on the simplex (tangent: sums to 0)."""
        d0, g0 = self._ot(p, self.n0, rng, True)
        d1, g1 = self._ot(p, self.n1, rng, True)
        perf0, perf1 = self.low.predict(p, [d0])[0], self.high.predict(p, [d1])[0]
        grad0 = feature_gradient(p, d0, self.low.coef, g0)
        grad1 = feature_gradient(p, d1, self.high.coef, g1)
        value = float(project(n, self.n0, self.n1, perf0, perf1))
        grad = np.asarray(project(n, self.n0, self.n1, grad0, grad1), float)
        return value, grad - grad.mean()

    def select(
        self,
        n: int,
        start: np.ndarray,
        steps: int,
        lr: float,
        decay: float,
        rng: np.random.Generator,
        maximize: bool,
        feasible: Callable[[np.ndarray], bool] | None = None,
        progress: Callable = silent,
    ) -> tuple[np.ndarray, list[dict]]:
        """Projected gradient ascent on the projected performance at n (descent on a loss).
        Normalised steps of length lr * decay^t, each projected onto the simplex; returns the
        iterate with the best predicted value and the path. ``progress`` (a
        ``shared.progress`` callable, e.g. ``run.progress``) wraps the steps: each solves
        2 x draws OT problems."""
        sign = 1.0 if maximize else -1.0
        p = project_onto_simplex(np.asarray(start, float))
        path, best, best_value = [], p.copy(), -np.inf
        for t in progress(range(steps), desc="select: OT gradient steps", total=steps):
            value, grad = self.value_and_gradient(p, n, rng)
            path.append({"step": t, **{f"p{i}": float(v) for i, v in enumerate(p)}, "predicted": value})
            if sign * value > best_value:
                best, best_value = p.copy(), sign * value
            norm = np.linalg.norm(grad)
            if norm == 0.0:
                break
            proposal = project_onto_simplex(p + sign * lr * decay**t * grad / norm)
            if feasible is not None and not feasible(proposal):
                break  # the pilot samples cannot form this mixture at n1
            p = proposal
        return best, path
