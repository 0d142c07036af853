"""The RL post-training law log L = -k(N) log X + E0(N), k(N) = k_max N / (N + N0): the published
fits and fits of our own runs.

(A) :func:`published_fits` reads the authors' four fits (data/fits_exp1.json) and
:func:`published_checks` evaluates their k(N) at the seven Qwen2.5 sizes: the saturation
k(72B)/k(32B) < 72/32, k(72B)/k_max, where k is concave in log N (k is a logistic function of
log N centred at N0: convex below N0, concave above it), and whether E0 rises with N.

(B) On our runs (a tidy table: size, N, step, C, D, err): :func:`loglinear_fits` fits log L =
-k log X + E0 per size (least squares in log-log, the authors' objective on log L),
:func:`k_of_n_fits` fits k(N) by the saturating form and by a linear-in-log N alternative and
compares them by AIC, :func:`equal_x_share` says how often the larger policy has the lower
ErrRate at equal compute (or data).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data" / "fits_exp1.json"
X_NAMES = {"C_raw": "C", "E": "D"}  # the repo's fit_x -> the paper's X (compute, data)


def k_of_n(k_max: float, n0: float, n) -> np.ndarray:
    """The learning efficiency k(N) = k_max N / (N + N0)."""
    n = np.asarray(n, dtype=float)
    return k_max * n / (n + n0)


def size_label(n: float) -> str:
    """0.5e9 -> '0.5B', 72e9 -> '72B'."""
    return f"{n / 1e9:g}B"


# ----------------------------------------------------------------------------- (A) the published fits
def published_fits(path: Path = DATA) -> pd.DataFrame:
    """One row per published fit: models (base/instruct), X (C/D), k_max, N0, R², points, E0 per size."""
    raw = json.loads(Path(path).read_text())
    sizes = raw["sizes"]
    rows = []
    for f in raw["fits"]:
        p = f["params"]
        e0 = [p["E0_" + f"{n / 1e9:g}".replace(".", "_")] for n in sizes]
        rows.append(dict(models=f["data_source"], X=X_NAMES[f["fit_x"]], k_max=p["k_max"], N0=p["N0"],
                         r2=f["info"]["r2"], n_points=f["info"]["n_points"], sizes=list(sizes), E0=e0))
    return pd.DataFrame(rows)


def concave_share(n, k) -> float:
    """Share of the interior points where k is concave in log N (negative second divided difference)."""
    u, k = np.log(np.asarray(n, dtype=float)), np.asarray(k, dtype=float)
    slopes = np.diff(k) / np.diff(u)
    second = np.diff(slopes)
    return float(np.mean(second < 0)) if len(second) else float("nan")


def published_checks(fits: pd.DataFrame) -> pd.DataFrame:
    """Per fit: k at each size, k(72B)/k(32B) against 72/32, k(72B)/k_max, concavity in log N
    (over all sizes and over the sizes above N0), and whether E0 rises with N."""
    rows = []
    for f in fits.itertuples():
        n = np.array(f.sizes)
        k = k_of_n(f.k_max, f.N0, n)
        above = n > f.N0
        # concavity above N0: the sizes above N0 and the last size below it (the slope into the tail)
        tail = slice(max(0, int(np.argmax(above)) - 1), None) if above.any() else slice(len(n), None)
        n72, n32 = n.max(), 32e9
        rows.append(dict(
            models=f.models, X=f.X, k_max=f.k_max, N0=f.N0, r2=f.r2, n_points=f.n_points,
            **{f"k_{size_label(s)}": float(v) for s, v in zip(n, k)},
            k_ratio_72_32=float(k_of_n(f.k_max, f.N0, n72) / k_of_n(f.k_max, f.N0, n32)),
            n_ratio_72_32=n72 / n32,
            k72_over_kmax=float(k_of_n(f.k_max, f.N0, n72) / f.k_max),
            concave_share_all=concave_share(n, k),
            concave_share_above_n0=concave_share(n[tail], k[tail]),
            E0_monotone=bool(np.all(np.diff(f.E0) > 0)),
        ))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- (B) our runs
def errrate_table(history: pd.DataFrame, size: str, n_params: int, err_floor: float,
                  column: str = "eval_sampled") -> pd.DataFrame:
    """The evaluated rows of an RLHistory.table as tidy (size, N, step, C, D, err, log_err);
    err = 1 - ``column`` (eval_sampled or eval_greedy: the pass@1 that is the test loss)."""
    ev = history[history["eval_greedy"].notna()]
    err = 1.0 - ev[column].to_numpy(dtype=float)
    return pd.DataFrame(dict(size=size, N=int(n_params), step=ev["step"].to_numpy(), C=ev["flops"].to_numpy(dtype=float),
                             D=ev["samples"].to_numpy(dtype=float), err=err,
                             log_err=np.log(np.maximum(err, err_floor))))


def loglinear_fit(x, log_err) -> dict[str, float]:
    """log L = -k log X + E0 by least squares: k, E0, R² (of log L; 0 when L is constant) and the number of points."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.asarray(log_err, dtype=float)
    if len(lx) < 2 or np.ptp(lx) == 0:
        raise ValueError(f"x: needs >= 2 distinct positive values to fit a slope, got {len(lx)} points")
    slope, intercept = np.polyfit(lx, ly, 1)
    res = ly - (slope * lx + intercept)
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1 - float(np.sum(res**2)) / ss_tot if ss_tot > 0 else 0.0  # L never moved: nothing explained
    return {"k": float(-slope), "E0": float(intercept), "r2": r2, "n": len(lx)}


def loglinear_fits(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """:func:`loglinear_fit` per size over the checkpoints after RL started (X > 0), sorted by N."""
    rows = []
    for (size, n), g in table[table[x] > 0].groupby(["size", "N"], sort=False):
        rows.append(dict(size=size, N=n, X=x, **loglinear_fit(g[x], g["log_err"])))
    return pd.DataFrame(rows).sort_values("N").reset_index(drop=True)


def aic(sse: float, n: int, p: int) -> float:
    """Gaussian AIC of a least-squares fit: n ln(SSE / n) + 2p (SSE floored at 1e-300)."""
    return n * math.log(max(sse, 1e-300) / n) + 2 * p


def _saturating_law(n_min: float, n_max: float):
    from shared import scaling

    def fn(p, x):
        n = x["N"]
        return p["kmax"] * n / (n + p["n0"].exp())

    lo, hi = math.log(n_min) - 4, math.log(n_max) + 4
    return scaling.Law(name="k_saturating", formula="k = kmax N / (N + N0), N0 = e^n0", inputs=("N",),
                       params=("kmax", "n0"), fn=fn, space="linear", box={"kmax": (-2.0, 2.0), "n0": (lo, hi)},
                       derived=lambda p: {"N0": math.exp(p["n0"])}, default_starts=64)


def k_of_n_fits(n, k, seed: int = 0) -> dict[str, float]:
    """k(N) by the saturating form k_max N/(N+N0) (least squares, multi-start) and by k = a + b ln N;
    their SSE and AIC (2 parameters each), and whether the fitted N0 lies inside the sizes' range."""
    from shared import scaling

    n, k = np.asarray(n, dtype=float), np.asarray(k, dtype=float)
    law = _saturating_law(n.min(), n.max())
    fit = scaling.fit(law, pd.DataFrame({"N": n}), k, loss="mse", seed=seed)
    sse_sat = float(np.sum((fit.predict(pd.DataFrame({"N": n})).ravel() - k) ** 2))
    b, a = np.polyfit(np.log(n), k, 1)
    sse_log = float(np.sum((a + b * np.log(n) - k) ** 2))
    n0 = fit.values["N0"]
    aic_sat, aic_log = aic(sse_sat, len(n), 2), aic(sse_log, len(n), 2)
    return dict(k_max=fit.values["kmax"], N0=n0, sse_sat=sse_sat, aic_sat=aic_sat, a_log=float(a), b_log=float(b),
                sse_log=sse_log, aic_log=aic_log, sat_wins=bool(aic_sat < aic_log),
                n0_in_range=bool(n.min() <= n0 <= n.max()))


def equal_x_share(table: pd.DataFrame, x: str) -> tuple[float, int]:
    """How often the larger of two adjacent sizes has the lower ErrRate at equal ``x`` (C or D).

    For each adjacent pair, every checkpoint of either (X > 0) whose X lies inside the other's
    range of checkpoints is compared with the other's ErrRate interpolated linearly in log X.
    Returns (share won by the larger size, number of comparisons); (nan, 0) without overlap.
    """
    t = table[table[x] > 0]
    order = t.groupby("size")["N"].first().sort_values().index.tolist()
    wins = total = 0
    for small, large in zip(order, order[1:]):
        a, b = (t[t["size"] == s].sort_values(x) for s in (small, large))
        for here, there, larger_here in ((b, a, True), (a, b, False)):
            lx = np.log(there[x].to_numpy())
            inside = here[(here[x] >= there[x].min()) & (here[x] <= there[x].max())]
            for xv, err in zip(inside[x], inside["err"]):
                other = float(np.interp(math.log(xv), lx, there["err"].to_numpy()))
                if err == other:
                    total += 1  # a tie counts as a comparison the larger size did not win
                    continue
                wins += int((err < other) == larger_here)
                total += 1
    return (wins / total if total else float("nan")), total


def drop_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with err replaced by err - err(step 0) of the same size: the ErrRate change since RL
    started (negative = lower), so equal-X comparisons on it remove each size's head start."""
    start = table[table["step"] == 0].groupby("size")["err"].first()
    return table.assign(err=table["err"] - table["size"].map(start))


def size_metrics(table: pd.DataFrame, fits: dict[str, pd.DataFrame], kfits: dict[str, dict], sizes) -> dict:
    """The metrics of the size sweep (claims ours-*): per size the ErrRate before RL, after the last step and
    their drop (and the minimum drop); per X in ``fits`` (C, D) each size's k and R² (:func:`loglinear_fits`),
    the median R², whether k strictly increases with N, the k(N) fits (:func:`k_of_n_fits`) and whether the
    saturating form wins with N0 inside our sizes; the equal-X shares won by the larger size, on the ErrRate
    and on its drop since step 0 (head start removed; :func:`drop_table`), each with its number of
    comparisons and None when there is none (the claim shows as not run)."""
    start = table[table["step"] == 0].set_index("size")["err"]
    end = table.loc[table.groupby("size")["step"].idxmax()].set_index("size")["err"]
    drop = (start - end).reindex(list(sizes))
    out: dict = {f"ours_err_drop_{s}": round(float(v), 4) for s, v in drop.items()}
    out |= {f"ours_err_start_{s}": round(float(v), 4) for s, v in start.items()}
    out |= {f"ours_err_end_{s}": round(float(v), 4) for s, v in end.items()}
    out["ours_min_err_drop"] = round(float(drop.min()), 4)
    for x, f in fits.items():
        kf = kfits[x]
        out |= {f"ours_k_{x}_{r.size}": round(r.k, 5) for r in f.itertuples()}
        out |= {f"ours_fit_r2_{x}_{r.size}": round(r.r2, 4) for r in f.itertuples()}
        out[f"ours_fit_r2_{x}_median"] = round(float(np.median(f["r2"])), 4)
        out[f"ours_k_{x}_monotone"] = int(bool(np.all(np.diff(f["k"]) > 0)))
        out |= {f"ours_kn_{x}_{k}": (round(v, 6) if isinstance(v, float) else int(v)) for k, v in kf.items()}
        out[f"ours_saturating_wins_{x}"] = int(kf["sat_wins"] and kf["n0_in_range"])
    drops = drop_table(table)
    for x, name in (("C", "compute"), ("D", "data")):
        for key, t in (("share", table), ("drop_share", drops)):
            share, n = equal_x_share(t, x)
            out[f"ours_equal_{name}_{key.replace('share', 'comparisons')}"] = n
            out[f"ours_equal_{name}_{key}"] = round(share, 4) if n else None  # None: the ledger says not run
    return out


# ----------------------------------------------------------------------------- (C) data reuse
def reuse_summary(final: pd.DataFrame) -> pd.DataFrame:
    """Per tau, the mean final ErrRate over seeds and its relative difference to tau = 1
    (``final``: one row per (tau, seed) with column err)."""
    out = final.groupby("tau", as_index=False)["err"].agg(err="mean", err_std="std", seeds="count")
    base = float(out.loc[out["tau"] == 1, "err"].iloc[0])
    out["rel_diff"] = (out["err"] - base) / base
    return out


def reuse_metrics(curves: pd.DataFrame, claim_tau: float) -> dict:
    """The metrics of the reuse sweep (claims reuse-*) from its curves (:func:`runs.reuse_sweep`'s rows):
    per tau the final ErrRate (mean over seeds), its relative difference to tau = 1 and the unique pool; the
    ErrRate before RL (mean over the step-0 rows), the drop at tau = 1 and |relative difference| at claim_tau."""
    final = curves.loc[curves.groupby(["tau", "seed"])["step"].idxmax()]
    summary = reuse_summary(final)
    before = float(curves[curves["step"] == 0]["err"].mean())
    out: dict = {f"reuse_err_tau{t:g}": round(float(e), 4) for t, e in zip(summary["tau"], summary["err"])}
    out |= {f"reuse_rel_diff_tau{t:g}": round(float(d), 4) for t, d in zip(summary["tau"], summary["rel_diff"])}
    out |= {f"reuse_pool_tau{t:g}": int(n) for t, n in curves.groupby("tau")["pool"].first().items()}
    claim = summary.set_index("tau").loc[float(claim_tau)]
    out |= {"reuse_err_before": round(before, 4), "reuse_err_drop_tau1": round(before - out["reuse_err_tau1"], 4),
            "reuse_abs_rel_diff_claim_tau": round(abs(float(claim["rel_diff"])), 4), "reuse_claim_tau": claim_tau}
    return out
