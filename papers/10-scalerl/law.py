"""ScaleRL's sigmoid compute-performance law (Eq. 1), its fit, and a power-law baseline.

    R_C - R0 = (A - R0) / (1 + (C_mid / C)^B)

R_C: pass rate after C units of RL compute, R0: before RL (measured, not fitted), A: the
asymptote, B: the scaling exponent (compute efficiency), C_mid: the compute at which half of
the gain A - R0 is reached. The fit is least squares on R over the evaluations of a compute
window (scipy ``curve_fit`` from a grid of starts, the best kept), with log C_mid as the free
variable and A in [0, 1], B in [B_MIN, B_MAX].

The power law is the pre-training form applied to the gain, R_C - R0 = a C^b (unbounded: it
never saturates), fitted the same way; it is what the paper argues a sigmoid should replace.
Compute is rescaled by the last C of the fit window before fitting (conditioning only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

B_MIN, B_MAX = 0.05, 20.0
POWER_B_MAX = 1.0  # diminishing returns, as pre-training power laws in compute (exponent < 1)
MIDPOINT_RANGE = 1e3  # log C_mid may lie this factor beyond the fitted compute range (either side)
A_BOUND = 0.999  # a fitted A at or above this sits on the bound A <= 1: the data did not pin it
BOUND_TOL = 1e-3  # a fitted B within this relative distance of B_MIN or B_MAX sits on the bound
MIN_FINAL_OVER_MID = 3.0  # a run must reach this many times C_mid for A (and B) to be identified


def sigmoid(c, a: float, b: float, c_mid: float, r0: float):
    """Eq. 1: R at compute ``c`` (array or scalar; c = 0 gives r0)."""
    c = np.asarray(c, dtype=float)
    with np.errstate(divide="ignore", over="ignore"):
        ratio = np.where(c > 0, (c_mid / np.where(c > 0, c, 1.0)) ** b, np.inf)
    return r0 + (a - r0) / (1.0 + ratio)


def power(c, a: float, b: float, r0: float):
    """The power-law baseline: r0 + a c^b."""
    return r0 + a * np.asarray(c, dtype=float) ** b


@dataclass(frozen=True)
class Fit:
    kind: str  # "sigmoid" | "power"
    values: dict[str, float]  # sigmoid: A, B, C_mid; power: a, b
    r0: float
    rmse: float  # on the fitted points
    points: int

    def predict(self, c):
        if self.kind == "sigmoid":
            return sigmoid(c, self.values["A"], self.values["B"], self.values["C_mid"], self.r0)
        return power(c, self.values["a"], self.values["b"], self.r0)


def _check(c, r) -> tuple[np.ndarray, np.ndarray]:
    c, r = np.asarray(c, dtype=float), np.asarray(r, dtype=float)
    if c.shape != r.shape or c.ndim != 1:
        raise ValueError(f"compute, rate: two 1-d arrays of one length, got shapes {c.shape} and {r.shape}")
    if len(c) < 3:
        raise ValueError(f"compute: a fit needs at least 3 points, got {len(c)}")
    if (c <= 0).any():
        raise ValueError(f"compute: every point must be > 0 (R0 is the C = 0 point), got min {c.min()}")
    return c, r


def _best_fit(name: str, model, x, r, p0s, bounds) -> tuple[float, np.ndarray]:
    """(SSE, parameters) of the best bounded ``curve_fit`` of ``model`` over the starts ``p0s``; a start
    that does not converge is skipped; a one-line RuntimeError naming ``name`` when none converges."""
    from scipy.optimize import curve_fit

    best = None
    for p0 in p0s:
        try:
            p, _ = curve_fit(model, x, r, p0=p0, bounds=bounds, maxfev=4000)
        except RuntimeError:  # no convergence from this start
            continue
        sse = float(((model(x, *p) - r) ** 2).sum())
        if best is None or sse < best[0] - 1e-15:
            best = (sse, p)
    if best is None:
        raise RuntimeError(f"{name}: none of the {len(p0s)} starts converged")
    return best


def fit_sigmoid(c, r, r0: float, starts: int = 16) -> Fit:
    """Least-squares fit of A, B, C_mid to (c, r) with R0 fixed; the best of a grid of ``starts`` starts."""
    c, r = _check(c, r)
    scale = c.max()
    x = c / scale
    lo_m, hi_m = math.log(x.min() / MIDPOINT_RANGE), math.log(MIDPOINT_RANGE)

    def model(xv, a, b, log_mid):
        return sigmoid(xv, a, b, math.exp(log_mid), r0)

    n_b = max(1, int(round(math.sqrt(starts))))
    n_m = max(1, math.ceil(starts / n_b))
    grid = [(b, m) for b in np.geomspace(0.5, 4.0, n_b) for m in np.linspace(math.log(x.min()), math.log(4.0), n_m)]
    a0 = float(np.clip(r.max() if r.max() >= r0 else r.min(), 0.0, 1.0))
    p0s = [[a0, b0, m0] for b0, m0 in grid[:starts]]
    sse, (a, b, log_mid) = _best_fit("fit_sigmoid", model, x, r, p0s, ([0.0, B_MIN, lo_m], [1.0, B_MAX, hi_m]))
    return Fit("sigmoid", {"A": float(a), "B": float(b), "C_mid": float(math.exp(log_mid) * scale)}, float(r0),
               math.sqrt(sse / len(c)), len(c))


def fit_power(c, r, r0: float, starts: int = 16) -> Fit:
    """Least-squares fit of a, b in r0 + a c^b to (c, r) with R0 fixed (best of ``starts`` exponents)."""
    c, r = _check(c, r)
    scale = c.max()
    x = c / scale

    def model(xv, a, b):
        return power(xv, a, b, r0)

    p0s = [[float(r[-1] - r0) or 1e-3, b0] for b0 in np.geomspace(0.05, 0.95 * POWER_B_MAX, starts)]
    sse, (a, b) = _best_fit("fit_power", model, x, r, p0s, ([-np.inf, 0.0], [np.inf, POWER_B_MAX]))
    return Fit("power", {"a": float(a / scale ** b), "b": float(b)}, float(r0), math.sqrt(sse / len(c)), len(c))


def identifiability(a: float, b: float, c_mid: float, c_final: float) -> dict[str, float | bool]:
    """Whether a full-run sigmoid fit pins its asymptote and exponent: A off its upper bound
    (A < A_BOUND), B off both bounds, and the run long enough past the midpoint
    (C_final / C_mid >= MIN_FINAL_OVER_MID). A run that ends near C_mid has not bent yet: the fit
    trades A against B and C_mid, so A and B are fitting artefacts, not measurements."""
    b_at_bound = b <= B_MIN * (1 + BOUND_TOL) or b >= B_MAX * (1 - BOUND_TOL)
    ratio = c_final / c_mid
    return {"a_at_bound": bool(a >= A_BOUND), "b_at_bound": bool(b_at_bound), "final_over_mid": float(ratio),
            "identifiable": bool(a < A_BOUND and not b_at_bound and ratio >= MIN_FINAL_OVER_MID)}


def window(c, lo: float, hi: float) -> np.ndarray:
    """Mask of the points with lo x C_final <= c <= hi x C_final and c > 0 (C_final: the last, largest c)."""
    c = np.asarray(c, dtype=float)
    final = c.max()
    return (c > 0) & (c >= lo * final - 1e-9 * final) & (c <= hi * final + 1e-9 * final)


def extrapolation(c, r, r0: float, fit_start: float, fit_end: float, final_window: float, starts: int = 16) -> dict:
    """Fit both laws on [fit_start, fit_end] of the final compute, predict the final performance.

    'Final' = the mean observed R over the evaluations at >= final_window x C_final; the
    prediction is the mean of each law at the same compute points. Returns the two fits and
    the observed / predicted / absolute errors.
    """
    c, r = np.asarray(c, dtype=float), np.asarray(r, dtype=float)
    part = window(c, fit_start, fit_end)
    final = window(c, final_window, 1.0)
    sig = fit_sigmoid(c[part], r[part], r0, starts)
    pw = fit_power(c[part], r[part], r0, starts)
    observed = float(r[final].mean())
    out = {"sigmoid": sig, "power": pw, "observed": observed, "fit_points": int(part.sum()),
           "final_points": int(final.sum())}
    for name, f in (("sigmoid", sig), ("power", pw)):
        pred = float(np.mean(f.predict(c[final])))
        out[f"{name}_pred"] = pred
        out[f"{name}_error"] = abs(pred - observed)
    return out


def fit_runs(table, fit_start: float, fit_end: float, final_window: float, starts: int = 16, rate: str = "eval_sampled"):
    """One row per (recipe, seed) of a runs table (columns recipe, seed, step, flops, ``rate``).

    R0 = the step-0 rate; A, B, C_mid = the sigmoid fitted on [fit_start, 1] of the run's final
    compute (the run's curve); ``half_*`` = the fit on [fit_start, fit_end] and its prediction
    of the final rate, ``power_*`` the power law's on the same window (see :func:`extrapolation`).
    """
    import pandas as pd

    rows = []
    for (recipe, seed), g in table.groupby(["recipe", "seed"], sort=False):
        g = g.sort_values("step")
        c, r = g["flops"].to_numpy(float), g[rate].to_numpy(float)
        r0 = float(r[g["step"].to_numpy() == 0][0])
        full = fit_sigmoid(c[window(c, fit_start, 1.0)], r[window(c, fit_start, 1.0)], r0, starts)
        ext = extrapolation(c, r, r0, fit_start, fit_end, final_window, starts)
        half, pw = ext["sigmoid"], ext["power"]
        rows.append({"recipe": recipe, "seed": int(seed), "R0": r0, "A": full.values["A"], "B": full.values["B"],
                     "C_mid": full.values["C_mid"], "rmse": full.rmse, "C_final": float(c.max()),
                     "observed_final": ext["observed"], "half_A": half.values["A"], "half_B": half.values["B"],
                     "half_C_mid": half.values["C_mid"], "sigmoid_pred": ext["sigmoid_pred"],
                     "sigmoid_error": ext["sigmoid_error"], "power_a": pw.values["a"], "power_b": pw.values["b"],
                     "power_pred": ext["power_pred"], "power_error": ext["power_error"],
                     "fit_points": ext["fit_points"], "final_points": ext["final_points"]})
    return pd.DataFrame(rows)
