"""Fitting scaling laws robustly: named laws, a vectorised multi-start fitter, bootstrap CIs.

    law = scaling.LAWS["chinchilla"]                   # L = E + A/N^alpha + B/D^beta
    fit = scaling.fit(law, df, "loss")                 # Huber on log residuals, Hoffmann's 4,500-start grid
    fit.values                                          # {'a': .., 'alpha': .., 'A': exp(a), ...}
    boot = scaling.bootstrap(fit, df, "loss", n=200)    # resample points, refit; boot.ci()
    scaling.errors(fit, held_out, "loss")               # mre, max_re, rmse_log, r2
    scaling.compute_optimal(fit, C=1e21)                # argmin over N of L(N, C / (6N))

The objective is the Chinchilla practice (Hoffmann et al. 2022, App. D.2): the sum over
points of Huber_delta(log prediction - log y), delta = 1e-3, minimised from a grid of
initialisations, keeping the best. The sum (not the mean) follows Epoch AI's replication:
with a mean the optimiser's tolerance stops it early.

Why not scipy's L-BFGS per start (``method="lbfgs"``, kept as the reference)? It is ~10 ms
a start here, 46 s for Hoffmann's 4,500 starts, and a bootstrap multiplies that. Instead,
every start (and every bootstrap resample) is one row of a batch: a damped Newton method
(Levenberg-Marquardt: IRLS curvature while exploring, then the exact Hessian from torch
autograd) advances all rows at once,
each with its own damping, accepting a step only where it lowers that row's objective.
Laws have a handful of parameters, so the per-row Hessians are cheap; the whole grid is one
tensor program (benchmarks/bench_scaling_fit.py: the 4,500-start Chinchilla fit and
Farseer's 9-parameter fit with 100 starts and 200 bootstrap resamples, against scipy).

A law is a :class:`Law`: names of its inputs and parameters, a torch function of both
(parameters come as ``[S, 1]`` tensors, inputs as ``[1, n]``; the result is ``[S, n]``),
a default space for the residuals, a grid or box of starting points, and optional derived
values (e.g. ``A = exp(a)``). Write your own the same way; the built-in ones are below.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

HUBER_DELTA = 1e-3  # Hoffmann et al.: delta = 1e-3 on log residuals
MAX_ITER = 150  # damped Newton iterations (converged rows stop earlier; Fit.converged says how many did)
FTOL = 1e-12  # a row has converged when a step lowers its objective by less than this, relatively,
WINDOW, WINDOW_TOL = 10, 1e-6  # ... or when WINDOW iterations lowered it by less than WINDOW_TOL (a row
# creeping along a valley that ends at infinity, as s N^q + S does when q -> 0, never meets FTOL)
BOOTSTRAP_STARTS = 1  # bootstrap refits start from the full fit's best distinct optimum (or more)
BOOTSTRAP_ITER = 100  # ... and take at most this many iterations: they start next to their minimum
EXPLORE_ITER = 40  # multi-start: the best quarter of the starts goes on every 10 iterations, the
# best KEEP_ROWS after 40
KEEP_ROWS = 16
Space = Literal["log", "linear"]


@dataclass(frozen=True)
class Law:
    """A parametric law y = fn(params, inputs)."""

    name: str
    formula: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    fn: Callable[[dict, dict], Any]  # torch: params {name: [S, 1]}, inputs {name: [1, n]} -> [S, n]
    space: Space = "log"  # residuals: log(pred) - log(y) for losses, pred - y for bounded scores
    grid: Mapping[str, Sequence[float]] | None = None  # starts="grid": the product of these
    box: Mapping[str, tuple[float, float]] | None = None  # starts=int: Sobol points in this box
    derived: Callable[[dict], dict] | None = None  # extra named values from the fitted params
    default_starts: int | str = 256

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "params", tuple(self.params))

    def predict(self, params: Mapping[str, float] | Sequence[float], **inputs) -> np.ndarray:
        """The law at ``inputs`` (arrays broadcast together) for one parameter set."""
        import torch

        theta = _as_theta(self, params)
        x = _inputs(self, inputs)
        shape = x.pop("__shape__")
        with torch.no_grad():
            out = self.fn(_split(self, torch.as_tensor(theta, dtype=torch.float64)[None]), x)
        return out[0].numpy().reshape(shape)

    def start_points(self, starts: int | str | np.ndarray, seed: int = 0) -> np.ndarray:
        """Starting points [S, P]: the law's grid, ``starts`` Sobol points in its box, or given."""
        if isinstance(starts, str):
            if starts != "grid":
                raise ValueError(f"starts: 'grid', a count or an array [S, {len(self.params)}], got {starts!r}")
            if self.grid is None:
                raise ValueError(f"starts: law {self.name} has no grid; give a number of random starts")
            return np.array(list(itertools.product(*(self.grid[p] for p in self.params))), dtype=float)
        if isinstance(starts, (int, np.integer)):
            if starts < 1:
                raise ValueError(f"starts: at least 1, got {starts}")
            if self.box is None:
                raise ValueError(f"starts: law {self.name} has no box for random starts; use starts='grid'")
            from scipy.stats import qmc

            low = np.array([self.box[p][0] for p in self.params], dtype=float)
            high = np.array([self.box[p][1] for p in self.params], dtype=float)
            with warnings.catch_warnings():  # any count is fine here; 2^k only balances the set better
                warnings.simplefilter("ignore", UserWarning)
                unit = qmc.Sobol(len(self.params), scramble=True, seed=seed).random(int(starts))
            return low + unit * (high - low)
        points = np.atleast_2d(np.asarray(starts, dtype=float))
        if points.shape[1] != len(self.params):
            raise ValueError(f"starts: need {len(self.params)} columns ({', '.join(self.params)}), got {points.shape[1]}")
        return points


@dataclass
class Fit:
    """The best parameters of ``law`` on some data, and how the search went."""

    law: Law
    params: dict[str, float]
    loss: float  # the objective at the optimum (sum of Huber terms)
    r2: float  # in-sample, on y in linear space
    n_points: int
    n_starts: int
    space: Space
    delta: float
    optima: np.ndarray = field(repr=False)  # distinct best end points [k, P], best first (bootstrap starts)
    converged: float = 1.0  # share of the starts followed to the end that converged before max_iter
    kind: Literal["huber", "mse"] = "huber"  # the loss it minimised (bootstrap refits use the same)

    @property
    def theta(self) -> np.ndarray:
        return np.array([self.params[p] for p in self.law.params])

    @property
    def values(self) -> dict[str, float]:
        """Parameters and the law's derived values (e.g. A = exp(a))."""
        extra = self.law.derived(self.params) if self.law.derived else {}
        return {**self.params, **{k: float(v) for k, v in extra.items()}}

    def predict(self, data=None, **inputs) -> np.ndarray:
        columns = _columns(self.law, data, inputs)
        return self.law.predict(self.params, **columns)


@dataclass
class Bootstrap:
    """Refits of ``fit`` on resampled points."""

    fit: Fit
    samples: pd.DataFrame  # one row per resample: parameters, derived values, objective

    def ci(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals of every parameter and derived value."""
        tail = (1 - level) / 2
        names = [c for c in self.samples.columns if c != "objective"]
        return pd.DataFrame(
            {
                "estimate": [self.fit.values[c] for c in names],
                "low": [self.samples[c].quantile(tail) for c in names],
                "high": [self.samples[c].quantile(1 - tail) for c in names],
            },
            index=pd.Index(names, name="param"),
        )

    def predict(self, data=None, **inputs) -> np.ndarray:
        """Predictions of every resample's fit: [n_resamples, n_points]."""
        columns = _columns(self.fit.law, data, inputs)
        law = self.fit.law
        return np.stack([law.predict(row, **columns).ravel() for row in self.samples[list(law.params)].to_numpy()])


# ----------------------------------------------------------------------------- fitting


def fit(
    law: Law,
    data,
    y,
    *,
    starts: int | str | np.ndarray | None = None,
    loss: Literal["huber", "mse"] = "huber",
    delta: float = HUBER_DELTA,
    space: Space | None = None,
    method: Literal["newton", "lbfgs"] = "newton",
    seed: int = 0,
    fixed: Mapping[str, float] | None = None,
    max_iter: int = MAX_ITER,
) -> Fit:
    """Fit ``law`` to ``y`` (a column name of ``data`` or an array) from many starting points.

    ``fixed`` pins parameters to given values (they keep their value at every start).
    ``method="lbfgs"`` runs scipy's L-BFGS-B per start with the same objective and autograd
    gradients: the reference the vectorised Newton method is checked and benchmarked against.
    ``max_iter`` caps the Newton iterations (``Fit.converged``: the share of the starts
    followed to the end that converged before it).
    """
    space = space or law.space
    x, target = _data(law, data, y, space)
    theta0 = law.start_points(law.default_starts if starts is None else starts, seed)
    mask = _free_mask(law, fixed)
    if fixed:
        for name, value in fixed.items():
            theta0[:, law.params.index(name)] = value
    weights = np.ones((len(theta0), len(target)))
    if method == "newton":
        theta, objective, converged = _solve_newton(law, x, target, theta0, weights, loss, delta, space, mask,
                                                    max_iter=max_iter)
    else:
        theta, objective, converged = _solve_lbfgs(law, x, target, theta0, weights, loss, delta, space, mask)
    return _make_fit(law, x, target, theta, objective, converged, space, delta, len(theta0), loss)


def bootstrap(
    fitted: Fit,
    data,
    y,
    *,
    n: int = 200,
    seed: int = 0,
    loss: Literal["huber", "mse"] | None = None,
    starts: int = BOOTSTRAP_STARTS,
    progress: Callable | None = None,
) -> Bootstrap:
    """Refit on ``n`` resamples of the points (with replacement), all in one batch.

    Each resample starts from the full fit's ``starts`` best distinct optima: a resample's
    optimum lies near the full data's, and a fresh grid per resample would cost ``n`` fits.
    With one start the intervals describe the neighbourhood of the best optimum; where other
    optima fit almost as well (a flat valley, as Farseer's form has), pass ``starts`` > 1 to
    let resamples move between them."""
    law = fitted.law
    loss = loss or fitted.kind
    x, target = _data(law, data, y, fitted.space)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(target), len(target)), minlength=len(target)) for _ in range(n)])
    optima = fitted.optima[:starts]
    theta0 = np.repeat(optima[None], n, axis=0).reshape(-1, len(law.params))
    weights = np.repeat(counts, len(optima), axis=0).astype(float)
    mask = np.ones(len(law.params), dtype=bool)
    theta, objective, _ = _solve_newton(law, x, target, theta0, weights, loss, fitted.delta, fitted.space, mask, keep=None,
                                        max_iter=BOOTSTRAP_ITER)
    objective = objective.reshape(n, len(optima))
    best = np.nanargmin(np.where(np.isfinite(objective), objective, np.inf), axis=1)
    theta = theta.reshape(n, len(optima), -1)[np.arange(n), best]
    rows = []
    for values, obj in zip(theta, objective[np.arange(n), best]):
        params = dict(zip(law.params, map(float, values)))
        extra = law.derived(params) if law.derived else {}
        rows.append({**params, **{k: float(v) for k, v in extra.items()}, "objective": float(obj)})
    return Bootstrap(fitted, pd.DataFrame(rows))


def fixed_fit(law: Law, params: Mapping[str, float], data=None, y=None, space: Space | None = None) -> Fit:
    """A Fit that holds given parameters (published values, one bootstrap resample), for
    ``predict``, ``compute_optimal``, ``errors`` and the plots; with data, its objective and
    R² on them are filled in (else NaN)."""
    space = space or law.space
    theta = _as_theta(law, params)
    values = dict(zip(law.params, map(float, theta)))
    loss = r2 = float("nan")
    n = 0
    if data is not None:
        x, target = _data(law, data, y, space)
        pred = law.predict(values, **x).ravel()
        loss, r2, n = huber_objective(pred, target, HUBER_DELTA, space), prediction_errors(pred, target)["r2"], len(target)
    return Fit(law, values, loss, r2, n, 0, space, HUBER_DELTA, theta[None])


def errors(fitted: Fit, data, y) -> dict[str, float]:
    """How well ``fitted`` predicts ``y`` at these points (held out or in range)."""
    _, target = _data(fitted.law, data, y, "linear")
    return prediction_errors(fitted.predict(data).ravel(), target)


def prediction_errors(pred, y) -> dict[str, float]:
    """mre, max_re (relative), rmse_log and r2 (linear space) of predictions ``pred`` of ``y``."""
    pred, target = np.asarray(pred, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    rel = np.abs(pred - target) / np.abs(target)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_res = np.log(pred) - np.log(target)
    ss_res = float(np.sum((pred - target) ** 2))
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    return {
        "mre": float(rel.mean()),
        "max_re": float(rel.max()),
        "rmse_log": float(np.sqrt(np.mean(log_res**2))),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "n": int(len(target)),
    }


def huber_objective(pred, y, delta: float = HUBER_DELTA, space: Space = "log") -> float:
    """The fitter's objective for given predictions: the sum of Huber_delta of the residuals."""
    pred, target = np.asarray(pred, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    res = np.abs(np.log(pred) - np.log(target) if space == "log" else pred - target)
    return float(np.sum(np.where(res <= delta, 0.5 * res**2, delta * (res - 0.5 * delta))))


def compute_optimal(
    fitted: Fit, C: float | Sequence[float], flops_per_token: float = 6.0, n_unit: float = 1.0, d_unit: float = 1.0
) -> pd.DataFrame:
    """The loss-minimising split of a compute budget C = flops_per_token * N * D (raw units).

    For laws with inputs N and D. ``n_unit``/``d_unit`` are the units the law was fitted in
    (1e9 when N and D were given in billions). A dense log grid, then a bounded refinement."""
    from scipy.optimize import minimize_scalar

    if set(fitted.law.inputs) != {"N", "D"}:
        raise ValueError(f"compute_optimal: needs a law of N and D, {fitted.law.name} has {fitted.law.inputs}")
    rows = []
    for budget in np.atleast_1d(np.asarray(C, dtype=float)):
        centre = 0.5 * math.log(budget / flops_per_token)

        def loss_at(log_n, budget=budget):
            n = np.exp(log_n)
            d = budget / (flops_per_token * n)
            return fitted.law.predict(fitted.params, N=n / n_unit, D=d / d_unit)

        grid = np.linspace(centre - 12, centre + 12, 2401)
        values = np.asarray(loss_at(grid), dtype=float)
        values = np.where(np.isfinite(values), values, np.inf)
        i = int(np.argmin(values))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        best = minimize_scalar(lambda v: float(loss_at(np.array([v]))[0]), bounds=(lo, hi), method="bounded")
        n = float(np.exp(best.x))
        d = budget / (flops_per_token * n)
        rows.append({"C": budget, "N": n, "D": d, "D_over_N": d / n, "loss": float(best.fun),
                     "at_grid_edge": i in (0, len(grid) - 1)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- plots


def plot_fit(fitted: Fit, data, y, x: str, hue: str | None = None, ax=None, points: int = 100, label: str | None = None):
    """Data (markers) and the fitted law (lines) against ``x``, one colour per ``hue`` value."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    frame = _frame(data, y)
    groups = sorted(frame[hue].unique()) if hue else [None]
    colors = sns.color_palette("viridis", len(groups))
    grid_x = np.geomspace(frame[x].min(), frame[x].max(), points)
    for color, value in zip(colors, groups):
        rows = frame if value is None else frame[frame[hue] == value]
        ax.scatter(rows[x], rows["__y__"], color=color, s=14, label=None if value is None else f"{hue}={value:.3g}")
        others = {name: np.full_like(grid_x, rows[name].iloc[0]) for name in fitted.law.inputs if name != x}
        ax.plot(grid_x, fitted.predict(**{x: grid_x}, **others), color=color, lw=1.2)
    ax.set(xscale="log", xlabel=x, ylabel=y if isinstance(y, str) else "y",
           title=label or f"{fitted.law.name} fit (R² = {fitted.r2:.4f})")
    if hue:
        ax.legend(fontsize=6, ncol=2)
    return ax


def plot_residuals(fitted: Fit, data, y, x: str | None = None, ax=None, label: str | None = None):
    """Residuals of the fit (log or linear, as fitted) against ``x`` (default: the prediction)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3))[1]
    frame = _frame(data, y)
    pred = fitted.predict(frame).ravel()
    res = np.log(pred) - np.log(frame["__y__"]) if fitted.space == "log" else pred - frame["__y__"]
    xs = frame[x] if x else pred
    ax.scatter(xs, res, s=12)
    ax.axhline(0, color="black", lw=0.8)
    kind = "log(pred) - log(y)" if fitted.space == "log" else "pred - y"
    ax.set(xscale="log", xlabel=x or "prediction", ylabel=kind, title=label or f"{fitted.law.name} residuals")
    return ax


# ----------------------------------------------------------------------------- the solvers


def _residuals(law, x, target, theta, space):
    import torch

    pred = law.fn(_split(law, theta), x)
    return torch.log(pred) - torch.log(target) if space == "log" else pred - target


def _objective_rows(law, x, target, theta, weights, loss, delta, space):
    """Per-row objective [S] of parameters theta [S, P] (torch, differentiable)."""
    import torch

    res = _residuals(law, x, target, theta, space)
    if loss == "huber":
        absr = res.abs()
        terms = torch.where(absr <= delta, 0.5 * res**2, delta * (absr - 0.5 * delta))
    else:
        terms = 0.5 * res**2
    out = (weights * terms).sum(dim=1)
    return torch.where(torch.isfinite(out), out, torch.full_like(out, math.inf))


def _solve_newton(law, x, target, theta0, weights, loss, delta, space, mask, keep: int | None = KEEP_ROWS,
                  max_iter: int = MAX_ITER):
    """Levenberg-Marquardt (IRLS curvature), every row independently, all rows at once.

    Only the rows still moving are computed: the batch shrinks as starts converge. Starts
    stuck in flat regions (a zero exponent makes a term constant) creep on for hundreds of
    iterations, so the starts are thinned by objective while exploring (the best quarter every
    EXPLORE_ITER/4 iterations) and only the ``keep`` best continue to convergence; the rest
    stop where they are (``keep=None``: every row goes on, for batches of separate problems
    such as bootstrap resamples)."""
    import torch

    tx = {k: torch.as_tensor(np.array(v), dtype=torch.float64) for k, v in x.items()}
    ty = torch.as_tensor(np.array(target), dtype=torch.float64)[None]
    w_all = torch.as_tensor(np.array(weights), dtype=torch.float64)
    theta = torch.as_tensor(np.array(theta0), dtype=torch.float64).clone()
    free = torch.as_tensor(mask)
    n_rows, n_par = theta.shape
    eye = torch.eye(n_par, dtype=torch.float64)
    pair_free = free[:, None] & free[None, :]

    from torch.func import jacfwd, vmap

    def residuals(t):  # one row's residuals [n], for the Jacobian
        return _residuals(law, tx, ty, t[None], space)[0]

    jacobian = vmap(jacfwd(residuals))

    def exact_value_grad_hess(t, w):
        t = t.detach().requires_grad_(True)
        f = _objective_rows(law, tx, ty, t, w, loss, delta, space)
        (g,) = torch.autograd.grad(f.sum(), t, create_graph=True)
        rows = [torch.autograd.grad(g[:, j].sum(), t, retain_graph=True)[0] for j in range(n_par)]
        h = torch.stack(rows, dim=1).detach() * pair_free + torch.diag((~free).to(t.dtype))  # pinned: identity rows
        return f.detach(), g.detach() * free, h

    def value_grad_hess(t, w, exact):
        """Objective, exact gradient J^T w psi(r), and either the exact Hessian (autograd) or
        the IRLS one, J^T diag(w psi(r)/r) J.

        psi(r)/r is 1 in Huber's quadratic zone and delta/|r| outside: the curvature of the
        quadratic that majorises the Huber term at r (positive semidefinite, no second
        derivatives of the law; forward-mode Jacobians cost ~1/3 of an exact Hessian). It is
        robust far from a minimum but converges only linearly, so the exploration of many
        starts uses it and the last iterations, on few rows, use the exact Hessian."""
        if exact:
            return exact_value_grad_hess(t, w)
        with torch.no_grad():
            r = _residuals(law, tx, ty, t, space)
            jac = jacobian(t)
        absr = r.abs()
        if loss == "huber":
            psi = torch.where(absr <= delta, r, delta * torch.sign(r))
            curvature = torch.where(absr <= delta, torch.ones_like(r), delta / absr.clamp_min(1e-300))
        else:
            psi, curvature = r, torch.ones_like(r)
        f = _objective_rows(law, tx, ty, t, w, loss, delta, space)
        g = torch.einsum("snp,sn->sp", jac, w * psi) * free
        h = torch.bmm(jac.transpose(1, 2), jac * (w * curvature)[..., None]) * pair_free + torch.diag((~free).to(t.dtype))
        return f, g, h

    exact_from = EXPLORE_ITER if keep is not None else 0  # bootstrap rows start near their minimum
    f, g, h = value_grad_hess(theta, w_all, exact_from == 0)
    lam = torch.full((n_rows,), 1e-3, dtype=torch.float64)
    active = torch.isfinite(f) & torch.isfinite(g).all(dim=1) & torch.isfinite(h).flatten(1).all(dim=1)
    converged = torch.zeros(n_rows, dtype=torch.bool)
    followed = torch.ones(n_rows, dtype=torch.bool)  # rows followed to the end (not dropped after exploring)
    window_start = f.clone()
    for iteration in range(max_iter):
        if iteration and iteration % WINDOW == 0:
            slow = active & ((window_start - f) < WINDOW_TOL * f.abs().clamp_min(1e-300))
            converged |= slow
            active &= ~slow
            window_start = f.clone()
        if keep is not None and iteration and iteration % (EXPLORE_ITER // 4) == 0 and iteration <= EXPLORE_ITER:
            # successive quartering: every EXPLORE_ITER/4 iterations the best quarter goes on,
            # down to ``keep`` rows at EXPLORE_ITER (a large grid costs ~1/3 of exploring it all)
            survivors = keep if iteration == EXPLORE_ITER else max(keep, n_rows // 4 ** (iteration // (EXPLORE_ITER // 4)))
            if n_rows > survivors:
                ranked = torch.argsort(torch.where(torch.isfinite(f), f, torch.full_like(f, math.inf)))
                dropped = ranked[survivors:]
                active[dropped] = False
                followed[dropped] &= converged[dropped]  # a dropped row counts only if already done
        if iteration == exact_from and iteration > 0:
            rows = active.nonzero().squeeze(1)
            f[rows], g[rows], h[rows] = value_grad_hess(theta[rows], w_all[rows], True)
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        th, fi, gi, hi, li, wi = theta[idx], f[idx], g[idx], h[idx], lam[idx], w_all[idx]
        scale = hi.diagonal(dim1=1, dim2=2).abs().clamp_min(1e-12)
        step, info = torch.linalg.solve_ex(hi + li[:, None, None] * torch.diag_embed(scale) + 1e-12 * eye, -gi)
        ok = (info == 0) & torch.isfinite(step).all(dim=1)
        candidate = th + torch.where(ok[:, None], step, torch.zeros_like(step))
        with torch.no_grad():
            f_new = _objective_rows(law, tx, ty, candidate, wi, loss, delta, space)
        accept = ok & (f_new < fi)
        done = accept & ((fi - f_new) < FTOL * fi.abs().clamp_min(1e-300))
        li = torch.where(accept, (li * 0.3).clamp_min(1e-12), li * 10.0)
        stuck = li > 1e12  # no step lowers the objective: a (local) minimum or a flat region
        lam[idx] = li
        moved = idx[accept]
        if moved.numel():
            f2, g2, h2 = value_grad_hess(candidate[accept], wi[accept], iteration >= exact_from)
            theta[moved], f[moved], g[moved], h[moved] = candidate[accept], f2, g2, h2
            bad = ~(torch.isfinite(g2).all(dim=1) & torch.isfinite(h2).flatten(1).all(dim=1))
            active[moved[bad]] = False
        finished = idx[done | stuck]
        converged[finished] = True
        active[finished] = False
    share = (converged & followed).double().sum() / followed.double().sum().clamp_min(1)
    return theta.numpy(), f.numpy(), float(share)


def _solve_lbfgs(law, x, target, theta0, weights, loss, delta, space, mask):
    """scipy L-BFGS-B per start (the Chinchilla practice), autograd gradients."""
    import torch
    from scipy.optimize import minimize

    tx = {k: torch.as_tensor(np.array(v), dtype=torch.float64) for k, v in x.items()}
    ty = torch.as_tensor(np.array(target), dtype=torch.float64)[None]
    w = torch.as_tensor(np.array(weights[:1]), dtype=torch.float64)
    free = np.asarray(mask)
    thetas, values, ok = [], [], 0
    for start in theta0:
        pinned = start.copy()

        def value_and_grad(z):
            t = torch.as_tensor(pinned, dtype=torch.float64).clone()
            t[torch.as_tensor(free)] = torch.as_tensor(z, dtype=torch.float64)
            t = t[None].requires_grad_(True)
            f = _objective_rows(law, tx, ty, t, w, loss, delta, space)[0]
            if not torch.isfinite(f):
                return 1e300, np.zeros_like(z)
            (grad,) = torch.autograd.grad(f, t)
            return float(f.detach()), grad[0].numpy()[free]

        result = minimize(value_and_grad, start[free], jac=True, method="L-BFGS-B")
        end = pinned.copy()
        end[free] = result.x
        thetas.append(end)
        values.append(result.fun if result.fun < 1e299 else math.inf)
        ok += bool(result.success)
    return np.array(thetas), np.array(values), ok / len(theta0)


def _make_fit(law, x, target, theta, objective, converged, space, delta, n_starts, kind) -> Fit:
    order = np.argsort(np.where(np.isfinite(objective), objective, np.inf))
    if not np.isfinite(objective[order[0]]):
        raise ValueError(f"fit {law.name}: no start reached a finite objective; check the data and the starts")
    optima = []
    for i in order:
        if not np.isfinite(objective[i]) or len(optima) == BOOTSTRAP_STARTS * 3:
            break
        if all(np.max(np.abs(theta[i] - o) / (1e-8 + np.abs(o))) > 1e-4 for o in optima):
            optima.append(theta[i])
    best = theta[order[0]]
    params = dict(zip(law.params, map(float, best)))
    r2 = prediction_errors(law.predict(params, **x), target)["r2"]
    return Fit(law, params, float(objective[order[0]]), r2, len(target), n_starts, space, delta, np.array(optima),
               converged, kind)


# ----------------------------------------------------------------------------- data plumbing


def _frame(data, y) -> pd.DataFrame:
    frame = pd.DataFrame(data).reset_index(drop=True) if not isinstance(data, pd.DataFrame) else data.reset_index(drop=True)
    values = frame[y] if isinstance(y, str) else np.asarray(y, dtype=float)
    return frame.assign(__y__=np.asarray(values, dtype=float))


def _data(law: Law, data, y, space: Space):
    frame = _frame(data, y)
    missing = [name for name in law.inputs if name not in frame]
    if missing:
        raise ValueError(f"data: law {law.name} needs inputs {', '.join(law.inputs)}; missing {', '.join(missing)}")
    target = frame["__y__"].to_numpy(dtype=float)
    if not np.all(np.isfinite(target)):
        raise ValueError(f"y: {int((~np.isfinite(target)).sum())} values are not finite")
    if space == "log" and np.any(target <= 0):
        raise ValueError("y: log-space residuals need y > 0; pass space='linear' for scores that can be <= 0")
    x = {name: frame[name].to_numpy(dtype=float)[None] for name in law.inputs}
    return x, target


def _columns(law: Law, data, inputs) -> dict[str, np.ndarray]:
    if data is not None:
        frame = pd.DataFrame(data)
        return {name: frame[name].to_numpy(dtype=float) for name in law.inputs}
    return inputs


def _inputs(law: Law, inputs: dict) -> dict:
    import torch

    missing = [name for name in law.inputs if name not in inputs]
    if missing:
        raise ValueError(f"{law.name}: missing inputs {', '.join(missing)} (needs {', '.join(law.inputs)})")
    arrays = np.broadcast_arrays(*(np.asarray(inputs[name], dtype=float) for name in law.inputs))
    out: dict[str, Any] = {name: torch.as_tensor(np.array(a).reshape(1, -1)) for name, a in zip(law.inputs, arrays)}
    out["__shape__"] = arrays[0].shape
    return out


def _split(law: Law, theta) -> dict:
    return {name: theta[:, i : i + 1] for i, name in enumerate(law.params)}


def _as_theta(law: Law, params) -> np.ndarray:
    if isinstance(params, Mapping):
        missing = [p for p in law.params if p not in params]
        if missing:
            raise ValueError(f"{law.name}: missing parameters {', '.join(missing)}")
        return np.array([params[p] for p in law.params], dtype=float)
    theta = np.asarray(params, dtype=float).ravel()
    if theta.size != len(law.params):
        raise ValueError(f"{law.name}: {len(law.params)} parameters ({', '.join(law.params)}), got {theta.size}")
    return theta


def _free_mask(law: Law, fixed) -> np.ndarray:
    mask = np.ones(len(law.params), dtype=bool)
    for name in fixed or {}:
        if name not in law.params:
            raise ValueError(f"fixed: {name!r} is not a parameter of {law.name} ({', '.join(law.params)})")
        mask[law.params.index(name)] = False
    return mask


# ----------------------------------------------------------------------------- the laws


def _lse(*terms):
    import torch

    return torch.logsumexp(torch.stack(torch.broadcast_tensors(*terms)), dim=0)


def _chinchilla(p, x):
    import torch

    return torch.exp(_lse(p["e"], p["a"] - p["alpha"] * torch.log(x["N"]), p["b"] - p["beta"] * torch.log(x["D"])))


chinchilla = Law(
    name="chinchilla",
    formula="L = E + A / N^alpha + B / D^beta   (A = e^a, B = e^b, E = e^e)",
    inputs=("N", "D"),
    params=("a", "b", "e", "alpha", "beta"),
    fn=_chinchilla,
    # Hoffmann et al. App. D.2: 6 x 6 x 5 x 5 x 5 = 4,500 starts
    grid={"a": [0, 5, 10, 15, 20, 25], "b": [0, 5, 10, 15, 20, 25], "e": [-1, -0.5, 0, 0.5, 1],
          "alpha": [0, 0.5, 1, 1.5, 2], "beta": [0, 0.5, 1, 1.5, 2]},
    box={"a": (0, 25), "b": (0, 25), "e": (-1, 1), "alpha": (0, 2), "beta": (0, 2)},
    derived=lambda p: {"A": math.exp(p["a"]), "B": math.exp(p["b"]), "E": math.exp(p["e"])},
    default_starts="grid",
)


def _farseer(p, x):
    import torch

    n, d = x["N"], x["D"]
    first = torch.exp(p["s"] * n ** p["q"] + p["S"])
    exponent = torch.exp(p["A"] * n ** p["a"] + p["E"])
    return first + torch.exp(p["B"] * n ** p["b"] + p["Q"]) * d ** (-exponent)


farseer = Law(
    name="farseer",
    formula="L = exp(s N^q + S) + exp(B N^b + Q) * D^(-exp(A N^a + E))",
    inputs=("N", "D"),
    params=("s", "q", "S", "B", "b", "Q", "A", "a", "E"),
    fn=_farseer,
    # inputs are expected O(1) (e.g. N and D in billions): the box is in those units
    box={"s": (-2, 2), "q": (-1, 1), "S": (-3, 1), "B": (-3, 3), "b": (-1, 1), "Q": (-3, 2),
         "A": (-3, 3), "a": (-1, 1), "E": (-3, 1)},
    default_starts=256,
)


def _parscale(p, x):
    import torch

    gain = p["k"] * torch.log(x["P"]) + 1
    return torch.exp(p["alpha"] * (p["a"] - torch.log(x["N"]) - torch.log(gain))) + p["E"]


parscale = Law(
    name="parscale",
    formula="L = (A / (N (k ln P + 1)))^alpha + E   (A = e^a)",
    inputs=("N", "P"),
    params=("a", "k", "alpha", "E"),
    fn=_parscale,
    grid={"a": [0, 5, 10, 15, 20, 25, 30], "k": [0.1, 0.4, 1.0], "alpha": [0.1, 0.2, 0.4, 0.8], "E": [0, 0.5, 1, 2, 4]},
    box={"a": (0, 30), "k": (0, 2), "alpha": (0.02, 1), "E": (0, 5)},
    derived=lambda p: {"A": math.exp(p["a"])},
    default_starts="grid",
)


QQT_NORMALIZER = 1e5  # samples are divided by this before the power (as in the authors' code)


def _qqt_curve(a, d, n, pool, b_of_epoch):
    """Error after ``n`` samples seen from a pool of ``pool`` samples per epoch.

    Epoch 0: y = (a n / 1e5)^b + d. Every later epoch k multiplies y by (n_k / n_{k-1})^(b_k),
    with b_k the utility after k repetitions, so repeated data is worth less and less.
    ``b_of_epoch(e)`` maps epochs [E+1, 1, 1] to b_e [E+1, S, 1]."""
    import torch

    full = torch.floor(n / pool)  # completed passes [1, m]
    epochs = torch.arange(int(full.max().item()) + 1, dtype=n.dtype).reshape(-1, 1, 1)
    b = b_of_epoch(epochs)
    hi = a * torch.minimum(pool * (epochs + 1), n) / QQT_NORMALIZER  # samples seen by the end of epoch e
    lo = a * pool * epochs / QQT_NORMALIZER  # ... by its start
    first = hi[0] ** b[0] + d
    later = (epochs >= 1) & (epochs <= full)
    log_ratio = torch.where(later, torch.log(hi) - torch.log(torch.where(later, lo, torch.ones_like(lo))), 0.0)
    return first * torch.exp((b * log_ratio).sum(dim=0))


def _qqt(p, x):
    return _qqt_curve(p["a"], p["d"], x["n"], x["pool"], lambda e: p["b"] * 0.5 ** (e / p["tau"]))


qqt = Law(
    name="qqt",
    formula="y_0 = (a n / 1e5)^b + d;  y_k = y_{k-1} (n_k / n_{k-1})^(b 0.5^(k / tau))  (k: repetitions)",
    inputs=("n", "pool"),
    params=("a", "b", "tau", "d"),
    fn=_qqt,
    box={"a": (0.005, 0.1), "b": (-0.5, -0.01), "tau": (0.5, 20), "d": (0, 0.3)},
    default_starts=128,
)


def qqt_pool(n, pool, a: float, bs: Sequence[float], taus: Sequence[float], d: float) -> np.ndarray:
    """Predicted error of a pool of equal-sized buckets (each with its fitted b, tau).

    Every pass over the pool repeats each bucket once, so in pool epoch e the pool's utility
    is the mean over buckets of b_i 0.5^(e / tau_i) (func_effective_utility_aggregation). The
    authors' best-pool script also stretches each tau by the number of buckets in the pool
    (a bucket is repeated once per pool epoch, but its fitted tau counts bucket epochs):
    pass ``taus`` already scaled if you follow it."""
    import torch

    bs_t = torch.as_tensor(np.asarray(bs, dtype=float)).reshape(1, 1, -1)
    taus_t = torch.as_tensor(np.asarray(taus, dtype=float)).reshape(1, 1, -1)
    arrays = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(pool, dtype=float))
    tn, tp = (torch.as_tensor(np.array(v).reshape(1, -1)) for v in arrays)
    at, dt = torch.tensor([[float(a)]], dtype=torch.float64), torch.tensor([[float(d)]], dtype=torch.float64)
    with torch.no_grad():
        out = _qqt_curve(at, dt, tn, tp, lambda e: (bs_t * 0.5 ** (e / taus_t)).mean(dim=-1, keepdim=True))
    return out[0].numpy().reshape(arrays[0].shape)


def _sigmoid(p, x):
    import torch

    return p["R0"] + (p["A"] - p["R0"]) / (1 + torch.exp(p["B"] * (p["c"] - torch.log(x["C"]))))


sigmoid = Law(
    name="sigmoid",
    formula="R = R0 + (A - R0) / (1 + (C_mid / C)^B)   (C_mid = e^c; ScaleRL Eq. 1)",
    inputs=("C",),
    params=("A", "B", "c", "R0"),
    fn=_sigmoid,
    space="linear",  # R is a pass rate in [0, 1]
    box={"A": (0.1, 1.0), "B": (0.2, 4.0), "c": (0, 30), "R0": (0.0, 0.5)},
    derived=lambda p: {"C_mid": math.exp(p["c"])},
    default_starts=128,
)


def _rl_power(p, x):
    import torch

    n = x["N"]
    k = p["kmax"] * n / (n + torch.exp(p["n0"]))
    return torch.exp(-k * torch.log(x["X"]) + p["e0"] + p["e1"] * torch.log(n))


rl_power = Law(
    name="rl_power",
    formula="ln L = -k(N) ln X + e0 + e1 ln N,  k(N) = kmax N / (N + N0)   (N0 = e^n0)",
    inputs=("N", "X"),
    params=("kmax", "n0", "e0", "e1"),
    fn=_rl_power,
    box={"kmax": (0.01, 1.0), "n0": (0, 30), "e0": (-5, 5), "e1": (-0.5, 0.5)},
    derived=lambda p: {"N0": math.exp(p["n0"])},
    default_starts=128,
)

LAWS: dict[str, Law] = {law.name: law for law in (chinchilla, farseer, parscale, qqt, sigmoid, rl_power)}
