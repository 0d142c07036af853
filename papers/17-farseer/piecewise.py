"""Farseer's own fitting method, differential piecewise fitting, in a compact form.

The law is L(N, D) = U(N) + B(N) D^(-A(N)) with
    U(N) = exp(s N^q + S),  B(N) = exp(B N^b + Q),  A(N) = exp(A N^a + E).
The paper does not fit the 9 parameters jointly. It looks at differences along D at fixed N,
    L(N, D) - L(N, lambda D) = B(N) (D^(-A(N)) - (lambda D)^(-A(N))),
which cancel U(N), so every model size gives its own A_N, B_N from a 2-parameter power-law
fit (stage 1); smooth laws in N are then fitted to log A_N and log B_N (stage 2), B_N is
re-estimated with A(N) fixed, and U(N) is what is left of the loss (stage 3). Further rounds
re-estimate A_N, B_N from L - U(N) and refit the three laws ("multi-round iterative").

Each N-law z = c N^p + c0 is fitted by variable projection: a 1-D search over the power p,
the linear coefficients (c, c0) in closed form, so no starting values are needed.

This follows the description of the paper's Algorithm 2 (Appendix C.1) as summarised in
public reviews; the paper's own code was not available, so details (lambda, weights, the
number of rounds) are ours. Used as the paper's method and as the starting point of the
robust joint fit in ``refit.fit_laws``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, minimize_scalar

POWER_RANGE = (-1.5, 1.5)  # the search range of the exponents q, b, a in N^p


def stretched(n: np.ndarray, z: np.ndarray) -> tuple[float, float, float]:
    """(c, p, c0) minimising sum (z - c n^p - c0)^2: 1-D search over p, linear solve for c, c0."""
    n, z = np.asarray(n, dtype=float), np.asarray(z, dtype=float)

    def solve(p: float):
        basis = np.column_stack([n**p, np.ones_like(n)])
        coef, *_ = np.linalg.lstsq(basis, z, rcond=None)
        return coef, float(np.sum((basis @ coef - z) ** 2))

    grid = np.linspace(*POWER_RANGE, 121)
    grid = grid[np.abs(grid) > 1e-3]  # p = 0 makes n^p collinear with the constant
    sse = [solve(p)[1] for p in grid]
    i = int(np.argmin(sse))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = minimize_scalar(lambda p: solve(p)[1], bounds=(lo, hi), method="bounded")
    coef, _ = solve(float(best.x))
    return float(coef[0]), float(best.x), float(coef[1])


def difference_pairs(d: np.ndarray, ratio: float, tol: float = 0.15) -> list[tuple[int, int]]:
    """Index pairs (i, j) at one N with D_j / D_i within ``tol`` (in log) of ``ratio``; if none,
    consecutive points."""
    order = np.argsort(d)
    logd = np.log(d[order])
    pairs = [(order[i], order[j]) for i in range(len(d)) for j in range(i + 1, len(d))
             if abs(logd[j] - logd[i] - np.log(ratio)) < tol]
    return pairs or [(order[i], order[i + 1]) for i in range(len(d) - 1)]


def per_size_exponents(df: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Stage 1: A_N, B_N of each model size from loss differences along D (U(N) cancels)."""
    rows = []
    for n, group in df.groupby("N"):
        d, y = group["D"].to_numpy(), group["loss"].to_numpy()
        if len(d) < 3:
            continue
        i, j = np.array(difference_pairs(d, ratio)).T
        diff = y[i] - y[j]

        def resid(theta, i=i, j=j, d=d, diff=diff):
            log_b, log_a = theta
            alpha = np.exp(log_a)
            return np.exp(log_b) * (d[i] ** -alpha - d[j] ** -alpha) - diff

        best = min((least_squares(resid, [lb, la]) for lb in (-2.0, 0.0) for la in (np.log(0.1), np.log(0.5))),
                   key=lambda r: r.cost)
        rows.append({"N": n, "A_N": float(np.exp(best.x[1])), "B_N": float(np.exp(best.x[0])), "pairs": len(i)})
    return pd.DataFrame(rows)


def fit(df: pd.DataFrame, ratio: float = 2.0, rounds: int = 2) -> dict[str, float]:
    """Farseer's 9 parameters (s, q, S, B, b, Q, A, a, E) from a grid (columns N, D, loss)."""
    if df["N"].nunique() < 4:
        raise ValueError(f"piecewise fit: needs >= 4 model sizes (3 per N-law plus one), got {df['N'].nunique()}")
    per_n = per_size_exponents(df, ratio)
    n_all, d_all, y_all = (df[c].to_numpy(dtype=float) for c in ("N", "D", "loss"))
    params: dict[str, float] = {}
    for round_ in range(max(rounds, 1)):
        # stage 2: A(N), then B_N again with A(N) fixed (closed form), then B(N)
        ca, pa, c0a = stretched(per_n["N"], np.log(per_n["A_N"]))
        params.update(A=ca, a=pa, E=c0a)
        alpha = np.exp(ca * n_all**pa + c0a)
        b_n = []
        for n in per_n["N"]:
            at = n_all == n
            d, y, al = d_all[at], y_all[at], alpha[at][0]
            if round_ == 0:  # differences along D: U(N) cancels
                i, j = np.array(difference_pairs(d, ratio)).T
                g, t = d[i] ** -al - d[j] ** -al, y[i] - y[j]
            else:  # later rounds: L - U(N) = B_N D^-A(N)
                g, t = d**-al, y - np.exp(params["s"] * n ** params["q"] + params["S"])
            b_n.append(max(float(g @ t / (g @ g)), 1e-12))
        cb, pb, c0b = stretched(per_n["N"], np.log(b_n))
        params.update(B=cb, b=pb, Q=c0b)
        # stage 3: U(N) = what is left of the loss, averaged over D at each N
        rest = y_all - np.exp(cb * n_all**pb + c0b) * d_all**-alpha
        u_n = pd.Series(rest).groupby(n_all).mean()
        cs, ps, c0s = stretched(u_n.index.to_numpy(), np.log(np.clip(u_n.to_numpy(), 1e-6, None)))
        params.update(s=cs, q=ps, S=c0s)
        if round_ + 1 < rounds:  # next round: A_N, B_N from log(L - U(N)) = log B_N - A_N log D
            u = np.exp(cs * n_all**ps + c0s)
            rows = []
            for n in per_n["N"]:
                at = (n_all == n) & (y_all - u > 1e-6)
                if at.sum() >= 2:
                    slope, icpt = np.polyfit(np.log(d_all[at]), np.log(y_all[at] - u[at]), 1)
                    rows.append({"N": n, "A_N": max(-slope, 1e-6), "B_N": float(np.exp(icpt))})
            per_n = pd.DataFrame(rows)
    return {k: float(params[k]) for k in ("s", "q", "S", "B", "b", "Q", "A", "a", "E")}
