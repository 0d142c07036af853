"""Data pruning in the teacher–student perceptron (Sorscher et al. 2022, Sec. 2).

The setting: inputs ``x ~ N(0, I_N)``, labels ``y = sign(T·x)`` from a teacher ``T``.
A pruning metric scores every one of the ``P_tot = alpha_tot·N`` examples by its margin
along a *probe* direction ``p`` (``p = T`` is the perfect metric; a probe at angle
``theta`` to ``T`` is the imperfect one). Small ``|p·x|`` is a hard example, large an
easy one. A fraction ``f`` is kept (hardest, easiest or a random subset), giving
``alpha_prune = f·alpha_tot`` examples per dimension, and a student perceptron is trained
on what is kept. Its test error is the angle to the teacher over pi.

Two ways to get that error, meant to agree:

* :func:`simulate_grid` — a simulation: draw the data, prune it, train the
  **max-margin** student (the solution the paper's replica theory describes), read the
  angle. The student is found by a semi-smooth Newton method on the squared-hinge
  objective ``|w|^2/2 + C·sum(1 - y w·x)_+^2``, whose solution tends to the hard-margin
  SVM as ``C`` grows (violations shrink like ``1/C``). It runs in numpy
  (:func:`max_margin_numpy`) or in torch on any device (:func:`max_margin_torch`).
* :func:`theory_error` — the replica-symmetric prediction for N, P -> infinity, solved
  with scipy. We could not retrieve the paper's appendix, so the equations are our own
  derivation of the same calculation (Gardner volume of the student at fixed overlap
  with the teacher, in the limit of maximal margin); see :func:`theory_error`.

Without loss of generality the teacher is the first unit vector ``e1`` and the probe
lies in the plane of ``e1`` and ``e2``: both the Gaussian inputs and the max-margin
student are rotation-equivariant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, special
from threadpoolctl import threadpool_limits

from shared.progress import silent

Strategy = Literal["hard", "easy", "random"]
STRATEGIES: tuple[Strategy, ...] = ("hard", "easy", "random")
Progress = Callable[..., Iterable]


# --------------------------------------------------------------------------------------
# Data and pruning
# --------------------------------------------------------------------------------------


def select_kept(difficulty: np.ndarray, n_keep: int, strategy: Strategy, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``n_keep`` examples kept by a pruning ``strategy``.

    ``difficulty`` is any score where larger means harder. ``hard`` keeps the largest
    scores, ``easy`` the smallest, ``random`` a uniformly random subset (``rng``)."""
    n_total = len(difficulty)
    if not 0 <= n_keep <= n_total:
        raise ValueError(f"n_keep: must be in [0, {n_total}], got {n_keep}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "random":
        return np.sort(rng.choice(n_total, size=n_keep, replace=False))
    order = np.argsort(difficulty, kind="stable")  # easiest first
    chosen = order[n_total - n_keep :] if strategy == "hard" else order[:n_keep]
    return np.sort(chosen)


def probe_direction(n_dim: int, theta_deg: float) -> np.ndarray:
    """Unit probe vector at angle ``theta_deg`` to the teacher ``e1``, in the (e1, e2) plane."""
    if n_dim < 2:
        raise ValueError(f"n_dim: must be >= 2, got {n_dim}")
    theta = math.radians(theta_deg)
    p = np.zeros(n_dim)
    p[0], p[1] = math.cos(theta), math.sin(theta)
    return p


def teacher_student_data(n_dim: int, n_total: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``P_tot`` Gaussian inputs (rows) and their teacher labels ``sign(x_1)``."""
    x = rng.standard_normal((n_total, n_dim))
    y = np.where(x[:, 0] >= 0.0, 1.0, -1.0)
    return x, y


def n_examples(alpha: float, n_dim: int) -> int:
    return max(1, int(round(alpha * n_dim)))


def prune(
    x: np.ndarray, keep_fraction: float, strategy: Strategy, theta_deg: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices kept when ranking by the margin along a probe at ``theta_deg`` to the teacher.

    The margin along the probe is ``|p·x|``; hard examples are those with small margin."""
    n_keep = max(1, int(round(keep_fraction * len(x))))
    difficulty = -np.abs(x @ probe_direction(x.shape[1], theta_deg))
    return select_kept(difficulty, min(n_keep, len(x)), strategy, rng)


# --------------------------------------------------------------------------------------
# The max-margin student (numpy and torch)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitInfo:
    iterations: int
    max_violation: float  # max(1 - y w·x)_+ : how far from hard-margin feasibility
    converged: bool


def _exact_step_length(residual: np.ndarray, delta: np.ndarray, wd: float, dd: float, c: float) -> float:
    """Exact line search for the squared-hinge objective along a direction d.

    phi(t) = |w + t d|^2 / 2 + c * sum (r - t delta)_+^2  with r = 1 - margins and
    delta = y x·d is convex and piecewise quadratic; return the root of its (monotone)
    derivative wd + t dd - 2c * sum (r - t delta)_+ delta."""

    def slope(t: float) -> float:
        part = np.maximum(0.0, residual - t * delta)
        return wd + t * dd - 2.0 * c * float(part @ delta)

    if slope(0.0) >= 0.0:
        return 0.0
    hi = 1.0
    while slope(hi) < 0.0:
        hi *= 2.0
        if hi > 1e12:
            return hi
    return optimize.brentq(slope, 0.0, hi, xtol=1e-14, rtol=1e-12)


def _continuation(c: float) -> list[float]:
    """Penalties 1, 10, 100, ... up to ``c``: each stage starts from the last solution, so
    the active set (the would-be support vectors) changes little per stage."""
    if c <= 0.0:
        raise ValueError(f"c: must be > 0, got {c}")
    stages = [10.0**k for k in range(int(math.floor(math.log10(c))) + 1) if 10.0**k < c]
    return stages + [c]


def max_margin_numpy(
    x: np.ndarray, y: np.ndarray, c: float = 1e6, tol: float = 1e-12, max_iter: int = 200
) -> tuple[np.ndarray, FitInfo]:
    """Max-margin perceptron through the origin (hard-margin SVM without bias), numpy.

    Minimises ``|w|^2/2 + c·sum_mu (1 - y_mu w·x_mu)_+^2`` by semi-smooth Newton steps
    (the generalised Hessian uses only the rows with margin < 1) with an exact line
    search (Keerthi & DeCoste's finite Newton method), raising the penalty from 1 to ``c``
    by factors of 10. For linearly separable data the minimiser tends to the hard-margin
    solution as ``c`` grows; ``FitInfo.max_violation`` is the largest remaining shortfall
    of a margin below 1. ``max_iter`` bounds the Newton steps of each stage."""
    m = y[:, None] * x  # rows y_mu x_mu
    n_dim = x.shape[1]
    w = np.zeros(n_dim)
    converged = True
    total = 0
    for c_stage in _continuation(c):
        stage_converged = False
        for _ in range(max_iter):
            residual = 1.0 - m @ w
            active = residual > 0.0
            m_act = m[active]
            grad = w - 2.0 * c_stage * (m_act.T @ residual[active])
            hess = np.eye(n_dim) + 2.0 * c_stage * (m_act.T @ m_act)
            step = -np.linalg.solve(hess, grad)
            total += 1
            if -float(grad @ step) <= tol * (1.0 + float(w @ w)):  # Newton decrement
                stage_converged = True
                break
            t = _exact_step_length(residual, m @ step, float(w @ step), float(step @ step), c_stage)
            w = w + t * step
        converged = converged and stage_converged
    violation = float(np.max(np.maximum(0.0, 1.0 - m @ w), initial=0.0))
    return w, FitInfo(total, violation, converged)


def max_margin_torch(
    x, y, c: float = 1e6, tol: float = 1e-12, max_iter: int = 200
):  # -> tuple[torch.Tensor, FitInfo]
    """The same solver as :func:`max_margin_numpy`, in torch on ``x``'s device.

    ``x`` and ``y`` are torch tensors; float64 is used throughout (the Newton system is
    ill-conditioned by design, ``c`` being large). Only the 1-D line search runs on the
    host, on two vectors of length P."""
    import torch

    x = x.to(torch.float64)
    y = y.to(device=x.device, dtype=torch.float64)
    m = y[:, None] * x
    n_dim = x.shape[1]
    eye = torch.eye(n_dim, dtype=torch.float64, device=x.device)
    w = torch.zeros(n_dim, dtype=torch.float64, device=x.device)
    converged = True
    total = 0
    for c_stage in _continuation(c):
        stage_converged = False
        for _ in range(max_iter):
            residual = 1.0 - m @ w
            active = residual > 0.0
            m_act = m[active]
            grad = w - 2.0 * c_stage * (m_act.T @ residual[active])
            hess = eye + 2.0 * c_stage * (m_act.T @ m_act)
            step = -torch.linalg.solve(hess, grad)
            total += 1
            if -float(grad @ step) <= tol * (1.0 + float(w @ w)):
                stage_converged = True
                break
            t = _exact_step_length(
                residual.cpu().numpy(), (m @ step).cpu().numpy(), float(w @ step), float(step @ step), c_stage
            )
            w = w + t * step
        converged = converged and stage_converged
    violation = float(torch.clamp(1.0 - m @ w, min=0.0).max()) if len(m) else 0.0
    return w, FitInfo(total, violation, converged)


def angle_error(w: np.ndarray) -> float:
    """Test error of a student ``w`` against the teacher ``e1``: angle(w, e1) / pi."""
    norm = float(np.linalg.norm(w))
    if norm == 0.0:
        return 0.5
    return float(np.arccos(np.clip(w[0] / norm, -1.0, 1.0)) / np.pi)


# --------------------------------------------------------------------------------------
# Simulation grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One pruned training set: a total size, a keep fraction, a strategy, a probe angle."""

    alpha_total: float
    keep_fraction: float
    strategy: Strategy
    theta_deg: float = 0.0


def grid_cells(
    alpha_totals: Sequence[float],
    keep_fractions: Sequence[float],
    strategies: Sequence[Strategy],
    thetas_deg: Sequence[float] = (0.0,),
) -> list[Cell]:
    """All combinations; random pruning ignores the probe, so it is listed at theta 0 only,
    and f = 1 (nothing pruned) is listed once, as ``random``."""
    cells = []
    for a in alpha_totals:
        for f in keep_fractions:
            for s in strategies:
                for th in thetas_deg:
                    if f >= 1.0 and (s != "random" or th != 0.0):
                        continue
                    if s == "random" and th != 0.0:
                        continue
                    cells.append(Cell(float(a), float(f), s, float(th)))
    return cells


def simulate_grid(
    n_dim: int,
    cells: Sequence[Cell],
    seeds: Sequence[int],
    backend: Literal["numpy", "torch"] = "numpy",
    device: str = "cpu",
    hinge_c: float = 1e6,
    progress: Progress = silent,
) -> pd.DataFrame:
    """Train a max-margin student on every cell of the grid, for every seed.

    For one ``(seed, alpha_total)`` the full data set is drawn once and every keep
    fraction, strategy and probe prunes that same set (common random numbers make the
    strategies' differences less noisy). Data are drawn with numpy from ``seed`` whatever
    the backend, so the two backends see identical problems. The numpy backend runs with
    one BLAS thread: for these N x N systems two threads were 5-20x slower on a 2-core
    machine (measured)."""
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend: must be 'numpy' or 'torch', got {backend!r}")
    with threadpool_limits(limits=1 if backend == "numpy" else None):
        return _simulate_grid(n_dim, cells, seeds, backend, device, hinge_c, progress)


def _simulate_grid(n_dim, cells, seeds, backend, device, hinge_c, progress) -> pd.DataFrame:
    rows = []
    by_total: dict[float, list[Cell]] = {}
    for cell in cells:
        by_total.setdefault(cell.alpha_total, []).append(cell)
    jobs = [(seed, a) for seed in seeds for a in sorted(by_total)]
    for seed, a_tot in progress(jobs, desc="perceptron grid", total=len(jobs)):
        rng = np.random.default_rng([int(seed), int(round(a_tot * 1000))])
        x, y = teacher_student_data(n_dim, n_examples(a_tot, n_dim), rng)
        x_dev = y_dev = None
        if backend == "torch":
            import torch

            x_dev = torch.as_tensor(x, device=device)
            y_dev = torch.as_tensor(y, device=device)
        for cell in by_total[a_tot]:
            kept = prune(x, cell.keep_fraction, cell.strategy, cell.theta_deg, rng)
            if backend == "torch":
                import torch

                idx = torch.as_tensor(kept, device=device)
                w_t, info = max_margin_torch(x_dev[idx], y_dev[idx], c=hinge_c)
                w = w_t.cpu().numpy()
            elif backend == "numpy":
                w, info = max_margin_numpy(x[kept], y[kept], c=hinge_c)
            else:
                raise ValueError(f"backend: must be 'numpy' or 'torch', got {backend!r}")
            rows.append(
                {
                    "seed": int(seed),
                    "theta_deg": cell.theta_deg,
                    "alpha_total": cell.alpha_total,
                    "keep_fraction": cell.keep_fraction,
                    "strategy": cell.strategy,
                    "n_total": len(x),
                    "n_kept": len(kept),
                    "alpha_prune": len(kept) / n_dim,
                    "test_error": angle_error(w),
                    "newton_iterations": info.iterations,
                    "max_violation": info.max_violation,
                    "converged": info.converged,
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Replica theory
# --------------------------------------------------------------------------------------
#
# Write the unit student as J = R e1 + Q e2 + s J_perp, s = sqrt(1 - R^2 - Q^2). On a kept
# example the student's stability is  y J·x = h + s t,  h = y (R z + Q v)  (z = x_1,
# v = x_2 carry the pruning), and t ~ N(0, 1) is independent of everything kept,
# because pruning only looks at the (e1, e2) plane. The P examples impose
# t_mu >= (kappa - h_mu) / s on a spherical perceptron J_perp with Gaussian patterns;
# Gardner's (replica-symmetric, exact for this convex problem) capacity with heterogeneous
# margins says such J_perp exist as long as
#
#     F(kappa; R, Q) = alpha * E_kept[ g(kappa - h, s) ] - s^2  <=  0,
#     g(a, s) = E_t[(a - s t)_+^2] = (a^2 + s^2) Phi(a/s) + a s phi(a/s).
#
# The max-margin student has the largest kappa over all (R, Q): kappa* = max_{R,Q}
# kappa(R, Q), where F(kappa(R, Q); R, Q) = 0. Its overlap R fixes the test error
# arccos(R)/pi. Setting the gradient of kappa(R, Q) to zero gives the paper's
# remaining saddle-point equations; we maximise numerically instead, with the exact
# gradient of kappa(R, Q) from the implicit function theorem.


def _g_partials(a: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """(dg/da, dg/ds)."""
    b = a / s
    cdf = special.ndtr(b)
    pdf = _phi(b)
    return 2.0 * (a * cdf + s * pdf), 2.0 * s * cdf


def _cut(keep_fraction: float, strategy: Strategy) -> float:
    """Threshold c on |probe margin|: hard keeps |w| < c, easy keeps |w| > c."""
    if strategy == "hard":
        return float(special.ndtri((1.0 + keep_fraction) / 2.0))
    if strategy == "easy":
        return float(special.ndtri(1.0 - keep_fraction / 2.0))
    return math.nan


_W_MAX = 10.0  # the Gaussian tail beyond 10 sigma is below 1e-22


def _gauss_legendre(lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    half = 0.5 * (hi - lo)
    return lo + half * (nodes + 1.0), half * weights


def _graded(lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre on [lo, hi] with panels graded geometrically towards lo.

    The integrands have a kink of width ~ the student's angle to the teacher close to
    the teacher's decision boundary (lo); at large alpha that width is ~ 1/alpha, so
    panels of width 1e-7 ... 1e-1 next to lo resolve it."""
    if hi <= lo:
        return np.zeros(0), np.zeros(0)
    offsets = [0.0] + [10.0**k for k in range(-7, 0)] + [float(k) for k in range(1, int(hi - lo) + 1)]
    cuts = sorted({lo + o for o in offsets if lo + o < hi} | {hi})
    parts = [_gauss_legendre(a, b, n) for a, b in zip(cuts[:-1], cuts[1:])]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclass(frozen=True)
class _Nodes:
    """Quadrature of the kept distribution: E_kept[q] ~ sum(weight * q(yz, yv))."""

    yz: np.ndarray
    yv: np.ndarray
    weight: np.ndarray
    two_dim: bool


def _phi(t: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


def _kept_nodes(keep_fraction: float, strategy: Strategy, theta_deg: float, n_nodes: int) -> _Nodes:
    """Nodes for the distribution of (y z, y v) over the kept examples.

    With w = probe margin and u its in-plane orthogonal partner (both N(0,1)),
    z = cos(th) w - sin(th) u, v = sin(th) w + cos(th) u. The flip (w, u) -> (-w, -u)
    leaves (yz, yv) unchanged, so w >= 0 suffices (density doubled). ``n_nodes`` is the
    Gauss–Legendre order of each panel."""
    if strategy == "random":
        f, w_lo, w_hi = 1.0, 0.0, _W_MAX
    else:
        f = keep_fraction
        c = _cut(keep_fraction, strategy)
        w_lo, w_hi = (0.0, c) if strategy == "hard" else (c, c + _W_MAX)
    if theta_deg == 0.0 or strategy == "random":
        # z = w >= 0, y = +1; v is an ordinary Gaussian direction (Q = 0 by symmetry)
        w, ww = _graded(w_lo, w_hi, n_nodes)
        return _Nodes(w, np.zeros_like(w), 2.0 * _phi(w) * ww / f, two_dim=False)
    # theta > 0: the teacher's boundary z = 0 is the line u = w cot(th); integrate u on
    # each side of it, graded towards it, and w (smooth here) on one Gauss–Legendre rule.
    th = math.radians(theta_deg)
    w, ww = _gauss_legendre(w_lo, w_hi, 2 * n_nodes)
    pw = 2.0 * _phi(w) * ww / f
    u_max = 8.0  # |u| > 8 carries < 1e-15 of the mass
    yz, yv, wt = [], [], []
    for wi, pwi in zip(w, pw):
        u0 = float(np.clip(wi * math.cos(th) / math.sin(th), -u_max, u_max))  # z = 0 here
        below, wb = _graded(0.0, u0 + u_max, n_nodes)  # u = u0 - offset: z > 0, y = +1
        above, wa = _graded(0.0, u_max - u0, n_nodes)  # u = u0 + offset: z < 0, y = -1
        for u, wu, sign in ((u0 - below, wb, 1.0), (u0 + above, wa, -1.0)):
            z = math.cos(th) * wi - math.sin(th) * u
            v = math.sin(th) * wi + math.cos(th) * u
            yz.append(sign * z)
            yv.append(sign * v)
            wt.append(pwi * wu * _phi(u))
    return _Nodes(np.concatenate(yz), np.concatenate(yv), np.concatenate(wt), two_dim=True)


def _feasibility(kappa: float, r: float, q: float, alpha: float, nodes: _Nodes) -> tuple[float, float]:
    """F(kappa; R, Q) and dF/dkappa (F is convex and increasing in kappa)."""
    s = math.sqrt(max(0.0, 1.0 - r * r - q * q))
    a = kappa - (r * nodes.yz + q * nodes.yv)
    if s == 0.0:
        pos = np.maximum(a, 0.0)
        return alpha * float(nodes.weight @ (pos * pos)), 2.0 * alpha * float(nodes.weight @ pos)
    b = a / s
    cdf = special.ndtr(b)
    pdf = _phi(b)
    g = (a * a + s * s) * cdf + a * s * pdf
    g_a = 2.0 * (a * cdf + s * pdf)
    return alpha * float(nodes.weight @ g) - s * s, alpha * float(nodes.weight @ g_a)


def _kappa_at(r: float, q: float, alpha: float, nodes: _Nodes, start: float = 1.0) -> float:
    """The largest margin kappa reachable at overlaps (R, Q): the root of F in kappa.

    F is convex and increasing in kappa, so Newton's method started where F > 0 descends
    monotonically onto the root."""
    hi, width = start, 1.0
    while _feasibility(hi, r, q, alpha, nodes)[0] < 0.0:
        hi, width = hi + width, 2.0 * width
    kappa = hi
    for _ in range(200):
        f, f_kappa = _feasibility(kappa, r, q, alpha, nodes)
        step = f / f_kappa
        kappa -= step
        if step <= 1e-13 * (1.0 + abs(kappa)):
            return kappa
    raise RuntimeError(f"kappa root did not converge (R={r}, Q={q}, alpha={alpha})")


def _kappa_and_grad(r: float, q: float, alpha: float, nodes: _Nodes, start: float) -> tuple[float, float, float]:
    """kappa(R, Q) and its gradient (implicit function theorem on F = 0)."""
    kappa = _kappa_at(r, q, alpha, nodes, start)
    s = math.sqrt(max(1e-300, 1.0 - r * r - q * q))
    a = kappa - (r * nodes.yz + q * nodes.yv)
    ga, gs = _g_partials(a, s)
    f_kappa = alpha * float(nodes.weight @ ga)
    f_r = -alpha * float(nodes.weight @ (ga * nodes.yz + gs * r / s)) + 2.0 * r
    f_q = -alpha * float(nodes.weight @ (ga * nodes.yv + gs * q / s)) + 2.0 * q
    return kappa, -f_r / f_kappa, -f_q / f_kappa


@dataclass(frozen=True)
class TheoryPoint:
    test_error: float
    overlap: float  # R = cos(angle to teacher)
    probe_overlap: float  # Q: the student's component along the probe's off-teacher part
    margin: float  # kappa, for a unit student


def theory_point(
    alpha_prune: float, keep_fraction: float, strategy: Strategy, theta_deg: float = 0.0, n_nodes: int = 12
) -> TheoryPoint:
    """Replica prediction for the max-margin student on a pruned set (see module notes).

    ``alpha_prune`` examples per dimension kept, the fraction ``keep_fraction`` of the
    total chosen by ``strategy`` on the margin along a probe at ``theta_deg`` to the
    teacher. ``n_nodes`` is the Gauss–Legendre order per integration variable."""
    if alpha_prune <= 0.0:
        raise ValueError(f"alpha_prune: must be > 0, got {alpha_prune}")
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction: must be in (0, 1], got {keep_fraction}")
    if keep_fraction >= 1.0:
        strategy = "random"
    nodes = _kept_nodes(keep_fraction, strategy, theta_deg, n_nodes)

    # Optimise over the student's angle to the teacher, A = pi * error, in log space:
    # the error spans orders of magnitude.
    if not nodes.two_dim:
        res = optimize.minimize_scalar(
            lambda log_a: -_kappa_at(math.cos(math.exp(log_a)), 0.0, alpha_prune, nodes),
            bounds=(math.log(1e-8), math.log(math.pi / 2)),
            method="bounded",
            options={"xatol": 1e-7},
        )
        ang = math.exp(res.x)
        return TheoryPoint(ang / math.pi, math.cos(ang), 0.0, -float(res.fun))

    # Two overlaps: J = (cos A, sin A cos B, sin A sin B, ...), B in (0, pi).
    last_kappa = [1.0]

    def negative_kappa(params: np.ndarray) -> tuple[float, np.ndarray]:
        log_a, b = params
        ang = math.exp(log_a)
        r, q = math.cos(ang), math.sin(ang) * math.cos(b)
        kappa, dk_dr, dk_dq = _kappa_and_grad(r, q, alpha_prune, nodes, last_kappa[0] + 0.1)
        last_kappa[0] = kappa
        dk_dang = -math.sin(ang) * dk_dr + math.cos(ang) * math.cos(b) * dk_dq
        dk_db = -math.sin(ang) * math.sin(b) * dk_dq
        return -kappa, -np.array([dk_dang * ang, dk_db])

    # Start from the perfect-metric student's angle, with no probe component.
    start = theory_point(alpha_prune, keep_fraction, strategy, 0.0, n_nodes).test_error * math.pi
    res = optimize.minimize(
        negative_kappa,
        x0=np.array([math.log(max(start, 1e-6)), math.pi / 2]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(math.log(1e-8), math.log(math.pi / 2)), (1e-6, math.pi - 1e-6)],
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 300},
    )
    ang, b = math.exp(res.x[0]), res.x[1]
    return TheoryPoint(ang / math.pi, math.cos(ang), math.sin(ang) * math.cos(b), -float(res.fun))


def theory_error(
    alpha_prune: float, keep_fraction: float, strategy: Strategy, theta_deg: float = 0.0, n_nodes: int = 12
) -> float:
    """Test error arccos(R)/pi of the replica prediction (:func:`theory_point`)."""
    return theory_point(alpha_prune, keep_fraction, strategy, theta_deg, n_nodes).test_error


def theory_grid(cells: Sequence[Cell], n_nodes: int = 12, progress: Progress = silent) -> pd.DataFrame:
    """Theory on the cells of a simulation grid (alpha_prune = f * alpha_total)."""
    rows = []
    for cell in progress(cells, desc="replica theory", total=len(cells)):
        alpha_prune = cell.keep_fraction * cell.alpha_total
        with threadpool_limits(limits=1):
            pt = theory_point(alpha_prune, cell.keep_fraction, cell.strategy, cell.theta_deg, n_nodes)
        rows.append(
            {
                "theta_deg": cell.theta_deg,
                "alpha_total": cell.alpha_total,
                "keep_fraction": cell.keep_fraction,
                "strategy": cell.strategy,
                "alpha_prune": alpha_prune,
                "theory_error": pt.test_error,
                "theory_overlap": pt.overlap,
                "theory_margin": pt.margin,
            }
        )
    return pd.DataFrame(rows)


def theory_frontier(
    alpha_prunes: Sequence[float],
    alpha_totals: Sequence[float],
    n_nodes: int = 12,
    progress: Progress = silent,
) -> pd.DataFrame:
    """The Pareto frontier of the perfect metric, as in the paper's Fig. 1: the lower
    envelope, over total sizes ``alpha_totals`` (each one a curve of error against
    alpha_prune = f * alpha_total), of keep-hard and keep-easy. For each ``alpha_prune``
    the envelope's error, the (alpha_total, f, strategy) reaching it, and random pruning's
    error beside it."""
    rows = []
    for alpha_prune in progress(list(alpha_prunes), desc="theory frontier", total=len(alpha_prunes)):
        random_error = theory_error(alpha_prune, 1.0, "random", 0.0, n_nodes)
        best = (random_error, alpha_prune, 1.0, "random")
        for alpha_total in alpha_totals:
            f = alpha_prune / alpha_total
            if not 0.0 < f < 1.0:
                continue
            for strategy in ("hard", "easy"):
                with threadpool_limits(limits=1):
                    err = theory_error(alpha_prune, f, strategy, 0.0, n_nodes)
                if err < best[0]:
                    best = (err, float(alpha_total), f, strategy)
        rows.append(
            {
                "alpha_prune": float(alpha_prune),
                "frontier_error": best[0],
                "best_alpha_total": best[1],
                "best_keep_fraction": best[2],
                "best_strategy": best[3],
                "random_error": random_error,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Summaries used by the claims
# --------------------------------------------------------------------------------------


def seed_mean(sim: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of the test error over seeds, per cell."""
    keys = ["theta_deg", "alpha_total", "keep_fraction", "strategy"]
    out = sim.groupby(keys, as_index=False).agg(
        alpha_prune=("alpha_prune", "mean"),
        test_error=("test_error", "mean"),
        test_error_sem=("test_error", "sem"),
        n_seeds=("seed", "nunique"),
    )
    out["test_error_sem"] = out["test_error_sem"].fillna(0.0)
    return out


def cell_error(table: pd.DataFrame, alpha_total: float, keep_fraction: float, strategy: Strategy, theta_deg: float = 0.0, column: str = "test_error") -> float:
    """The value of ``column`` at one cell of a seed-averaged (or theory) table.

    f = 1 and random pruning are looked up at theta 0 and as ``random`` (see grid_cells)."""
    if keep_fraction >= 1.0:
        strategy = "random"
    if strategy == "random":
        theta_deg = 0.0
    hit = table[
        np.isclose(table["alpha_total"], alpha_total)
        & np.isclose(table["keep_fraction"], keep_fraction)
        & (table["strategy"] == strategy)
        & np.isclose(table["theta_deg"], theta_deg)
    ]
    if len(hit) != 1:
        raise KeyError(f"no unique cell alpha_total={alpha_total} f={keep_fraction} {strategy} theta={theta_deg}")
    return float(hit[column].iloc[0])


def pareto_frontier(mean_table: pd.DataFrame, theta_deg: float = 0.0) -> pd.DataFrame:
    """Empirical frontier on a grid: for each distinct alpha_prune, the smallest
    seed-averaged error over all (alpha_total, f, strategy) cells at the probe angle, and
    the random-pruning error at that alpha_prune (mean over the random cells with it).

    Also records the smallest keep fraction among the cells reaching that alpha_prune."""
    t = mean_table[np.isclose(mean_table["theta_deg"], theta_deg) | (mean_table["strategy"] == "random")].copy()
    t["alpha_prune_key"] = t["alpha_prune"].round(6)
    rows = []
    for key, group in t.groupby("alpha_prune_key"):
        random_cells = group[group["strategy"] == "random"]
        if random_cells.empty:
            continue
        best = group.loc[group["test_error"].idxmin()]
        rows.append(
            {
                "alpha_prune": float(key),
                "frontier_error": float(best["test_error"]),
                "best_strategy": best["strategy"],
                "best_alpha_total": float(best["alpha_total"]),
                "best_keep_fraction": float(best["keep_fraction"]),
                "min_keep_fraction": float(group["keep_fraction"].min()),
                "random_error": float(random_cells["test_error"].mean()),
            }
        )
    return pd.DataFrame(rows).sort_values("alpha_prune", ignore_index=True)


def loglog_slope(alpha: np.ndarray, error: np.ndarray) -> float:
    """Least-squares slope of log(error) against log(alpha)."""
    alpha, error = np.asarray(alpha, float), np.asarray(error, float)
    if len(alpha) < 2:
        raise ValueError("loglog_slope: need at least two points")
    return float(np.polyfit(np.log(alpha), np.log(error), 1)[0])


def dense_cells(
    alpha_totals: Sequence[float],
    min_keep_fraction: float,
    points: int,
    strategies: Sequence[Strategy] = ("hard", "easy"),
    thetas_deg: Sequence[float] = (0.0,),
) -> list[Cell]:
    """Cells on a fine log-spaced grid of keep fractions up to f = 1 (where every
    strategy is random pruning), for drawing theory lines."""
    fractions = np.geomspace(min_keep_fraction, 1.0, points)
    return [
        Cell(float(a), float(f), s, float(th))
        for a in alpha_totals
        for s in strategies
        for th in thetas_deg
        for f in fractions
    ]


def merge_theory(mean_table: pd.DataFrame, theory: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean simulation beside theory, cell by cell, with their difference."""
    keys = ["theta_deg", "alpha_total", "keep_fraction", "strategy"]
    merged = mean_table.merge(theory.drop(columns=["alpha_prune"]), on=keys, how="inner", validate="one_to_one")
    if len(merged) != len(mean_table):
        raise ValueError("theory table does not cover every simulated cell")
    merged["theory_gap"] = merged["test_error"] - merged["theory_error"]
    return merged


def grid_metrics(
    merged: pd.DataFrame,
    frontier: pd.DataFrame,
    abundant: tuple[float, float],
    scarce: tuple[float, float],
    frontier_min_alpha_prune: float,
    frontier_max_keep_fraction: float,
    slope_range: tuple[float, float],
) -> dict[str, float]:
    """The numbers the perfect-metric claims are checked against (seed means), with the
    theory's value of each comparison beside it (``theory_`` prefix)."""
    out: dict[str, float] = {}
    for prefix, column in (("", "test_error"), ("theory_", "theory_error")):
        a_tot, f = abundant
        hard = cell_error(merged, a_tot, f, "hard", column=column)
        rand = cell_error(merged, a_tot, f, "random", column=column)
        full = cell_error(merged, a_tot, 1.0, "random", column=column)
        out |= {
            f"{prefix}err_hard_abundant": hard,
            f"{prefix}err_random_abundant": rand,
            f"{prefix}err_full_abundant": full,
            f"{prefix}err_hard_over_random_abundant": hard / rand,
            f"{prefix}err_hard_over_full_abundant": hard / full,
        }
        a_tot, f = scarce
        easy = cell_error(merged, a_tot, f, "easy", column=column)
        rand = cell_error(merged, a_tot, f, "random", column=column)
        hard = cell_error(merged, a_tot, f, "hard", column=column)
        out |= {
            f"{prefix}err_easy_scarce": easy,
            f"{prefix}err_random_scarce": rand,
            f"{prefix}err_hard_scarce": hard,
            f"{prefix}easy_minus_random_scarce": easy - rand,
            f"{prefix}random_minus_hard_scarce": rand - hard,
        }
    reach = frontier[
        (frontier["alpha_prune"] >= frontier_min_alpha_prune - 1e-9)
        & (frontier["min_keep_fraction"] <= frontier_max_keep_fraction + 1e-9)
    ]
    if reach.empty:
        raise ValueError("no frontier point with alpha_prune >= the minimum reachable with a small keep fraction")
    ratio = reach["frontier_error"] / reach["random_error"]
    lo, hi = slope_range
    in_range = frontier[(frontier["alpha_prune"] >= lo - 1e-9) & (frontier["alpha_prune"] <= hi + 1e-9)]
    slope_front = loglog_slope(in_range["alpha_prune"], in_range["frontier_error"])
    slope_rand = loglog_slope(in_range["alpha_prune"], in_range["random_error"])
    out |= {
        "frontier_over_random_max": float(ratio.max()),
        "frontier_checked_points": int(len(reach)),
        "frontier_slope": slope_front,
        "random_slope": slope_rand,
        "frontier_slope_ratio": slope_front / slope_rand,
        "theory_gap_mean_abs": float(merged["theory_gap"].abs().mean()),
        "theory_gap_max_abs": float(merged["theory_gap"].abs().max()),
    }
    return out
