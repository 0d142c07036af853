"""Fitting the QQT law per bucket and predicting pools from it (Goyal et al. 2024, Sec. 3-4).

The law (``shared.scaling.qqt``, the authors' ``func_effective_utility``): error after n
samples seen from a pool of P samples per epoch is, in the first epoch,
``y_0 = (a n / 1e5)^b + d``, and every later epoch k multiplies it by
``(n_k / n_{k-1})^(b 0.5^(k / tau))`` -- a bucket's utility ``b`` (< 0: more negative is
more useful) halves every ``tau`` repetitions. A pool of several equal buckets has, in
its epoch e, the mean utility ``mean_i b_i 0.5^(e / tau_i)`` (``shared.scaling.qqt_pool``),
so a pool's curve is predicted from the buckets' fits without ever training on it.

How the fit is done, as in the authors' code: ``a`` and ``d`` are shared by all buckets
(``ablations/finding_a.py``; ``d`` is the irreducible error), and ``b``, ``tau`` per
bucket are found by a **grid search** (``grid_search.py``: 100 x 100 values; the README
says scipy optimisers were unstable). Here the grid is evaluated in one vectorised pass
(:func:`grid_curves`, equal to ``scaling.qqt.predict`` -- tested) over the shared (a, d)
too, and each bucket's (b, tau) is then refined by ``scaling.fit`` (Huber on log
residuals, damped Newton) from its grid optimum with a and d pinned.

Units: samples are counted in units where one bucket holds ``bucket_unit`` samples
(12.8M, the paper's bucket size), so ``a`` is on the paper's scale (``a n / 1e5``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared import scaling

PAPER_BUCKET = 12.8e6  # samples per bucket in the paper (DataComp medium, 10% of 128M)


def epoch_terms(n: np.ndarray, pool: float) -> tuple[np.ndarray, np.ndarray]:
    """What the law needs of the inputs alone: samples seen in the first epoch
    ``min(n, pool) / 1e5`` [J], and ``log(n_k / n_{k-1})`` for the later epochs k = 1..E
    [E, J] (0 where epoch k has not started). ``a`` cancels from the ratios."""
    n = np.asarray(n, dtype=float)
    full = np.floor(n / pool)
    epochs = np.arange(1, int(full.max()) + 1, dtype=float)[:, None]
    hi = np.minimum(pool * (epochs + 1), n[None])
    lo = pool * epochs
    started = epochs <= full[None]
    log_ratio = np.where(started, np.log(np.where(started, hi, 1.0)) - np.log(lo), 0.0)
    return np.minimum(n, pool) / scaling.QQT_NORMALIZER, log_ratio


def grid_curves(n: np.ndarray, pool: float, a: float, b: np.ndarray, tau: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The law for every (b, tau, d) of the grid at one ``a``: ``[B, T, D, J]``.
    log y = log((a n0)^b + d) + b * sum_k 0.5^(k / tau) log(n_k / n_{k-1})."""
    first, log_ratio = epoch_terms(n, pool)
    b, tau, d = (np.asarray(v, dtype=float) for v in (b, tau, d))
    epochs = np.arange(1, len(log_ratio) + 1, dtype=float)
    decay = 0.5 ** (epochs[None, :] / tau[:, None]) @ log_ratio if len(log_ratio) else np.zeros((len(tau), len(first)))
    head = (a * first[None, :]) ** b[:, None]  # [B, J]
    return (head[:, None, None, :] + d[None, None, :, None]) * np.exp(b[:, None, None, None] * decay[None, :, None, :])


@dataclass(frozen=True)
class BucketFit:
    """Fitted law parameters: shared a, d; per bucket b, tau (bucket order)."""

    a: float
    d: float
    b: list[float]
    tau: list[float]
    grid_loss: float  # sum of squared log residuals at the grid optimum (all buckets)
    r2: list[float]  # per bucket, in-sample after refinement

    def table(self, names: Sequence[str]) -> pd.DataFrame:
        return pd.DataFrame({"bucket": list(names), "a": self.a, "d": self.d, "b": self.b, "tau": self.tau, "r2": self.r2})


def fit_buckets(
    curves: Sequence[tuple[np.ndarray, np.ndarray, float]],
    a_grid: np.ndarray,
    d_grid: np.ndarray,
    b_grid: np.ndarray,
    tau_grid: np.ndarray,
    refine: bool = True,
) -> BucketFit:
    """Fit the QQT law to single-bucket error curves ``(n, error, pool)`` (n and pool in
    the law's units). Shared (a, d) and per-bucket (b, tau) by grid search on squared log
    residuals; then, if ``refine``, ``scaling.fit`` per bucket from the grid optimum with
    a and d pinned."""
    # log y = log((a n0)^b + d) + b * decay(tau) = u(a, b, d) + v(b, tau), so the squared
    # log residuals over the J points expand as sum u^2 + 2 u.v + sum v^2: a batched matrix
    # product per bucket instead of the [B, T, D, J] grid (same numbers, tested).
    b_grid, tau_grid, d_grid = (np.asarray(g, dtype=float) for g in (b_grid, tau_grid, d_grid))
    terms = []
    for n, err, pool in curves:
        first, log_ratio = epoch_terms(n, pool)
        epochs = np.arange(1, len(log_ratio) + 1, dtype=float)
        decay = 0.5 ** (epochs[None, :] / tau_grid[:, None]) @ log_ratio if len(log_ratio) else np.zeros((len(tau_grid), len(first)))
        v = b_grid[:, None, None] * decay[None]  # [B, T, J]
        terms.append((first, np.log(np.asarray(err, dtype=float)), v, np.sum(v**2, axis=-1)))
    best = (np.inf, None)
    for a in a_grid:
        per_d = np.zeros(len(d_grid))
        choices = []
        for first, log_err, v, v2 in terms:
            head = (a * first[None, :]) ** b_grid[:, None]  # [B, J]
            u = np.log(head[:, None, :] + d_grid[None, :, None]) - log_err  # [B, D, J]
            sse = np.sum(u**2, axis=-1)[:, None, :] + 2.0 * np.matmul(u, v.transpose(0, 2, 1)).transpose(0, 2, 1) + v2[:, :, None]  # [B, T, D]
            sse = np.where(np.isfinite(sse), sse, np.inf)
            flat = sse.reshape(-1, len(d_grid))
            idx = np.argmin(flat, axis=0)  # best (b, tau) per d
            per_d += flat[idx, np.arange(len(d_grid))]
            choices.append(idx)
        j = int(np.argmin(per_d))
        if per_d[j] < best[0]:
            picks = [np.unravel_index(c[j], (len(b_grid), len(tau_grid))) for c in choices]
            best = (per_d[j], (float(a), float(d_grid[j]), picks))
    loss, (a, d, picks) = best
    bs = [float(b_grid[i]) for i, _ in picks]
    taus = [float(tau_grid[t]) for _, t in picks]
    r2 = []
    for i, (n, err, pool) in enumerate(curves):
        data = {"n": np.asarray(n, dtype=float), "pool": np.full(len(n), float(pool))}
        if refine:
            fitted = scaling.fit(scaling.qqt, data, np.asarray(err, dtype=float),
                                 starts=np.array([[a, bs[i], taus[i], d]]), fixed={"a": a, "d": d})
            bs[i], taus[i] = fitted.params["b"], fitted.params["tau"]
        pred = scaling.qqt.predict({"a": a, "b": bs[i], "tau": taus[i], "d": d}, **data)
        ss_tot = float(np.sum((err - np.mean(err)) ** 2))
        r2.append(1.0 - float(np.sum((pred - err) ** 2)) / ss_tot if ss_tot > 0 else float("nan"))
    return BucketFit(a, d, bs, taus, float(loss), r2)


def predict_pools(fit: BucketFit, n: np.ndarray, bucket_pool: float, ks: Sequence[int], tau_scaling: str) -> pd.DataFrame:
    """Predicted error of the top-k pools (buckets 1..k, each ``bucket_pool`` samples) at
    samples seen ``n``, from the bucket fits alone. ``tau_scaling``: ``"repo"`` multiplies
    each tau by k as the authors' ``estimate_best_pool.py`` does; ``"none"`` uses the taus
    as fitted (``scaling.qqt_pool``'s plain aggregation)."""
    if tau_scaling not in ("repo", "none"):
        raise ValueError(f"tau_scaling: 'repo' or 'none', got {tau_scaling!r}")
    rows = []
    for k in ks:
        taus = np.asarray(fit.tau[:k]) * (k if tau_scaling == "repo" else 1)
        pred = scaling.qqt_pool(n, k * bucket_pool, fit.a, fit.b[:k], taus, fit.d)
        rows.append(pd.DataFrame({"k": k, "n_law": n, "predicted": pred}))
    return pd.concat(rows, ignore_index=True)


def analyse(
    mean: pd.DataFrame,
    budgets: Sequence[int],
    bucket_size: int,
    bucket_unit: float,
    grids: dict[str, np.ndarray],
    refine: bool,
    tau_scaling: str,
) -> dict:
    """Fit the buckets of ``mean`` (seed-mean curves from ``pools.mean_curves``), predict
    every top-k pool at every samples-seen value and compare with what was observed.

    Returns the fit, a table ``pools`` (k, n, observed, predicted, rel_error), a table
    ``best`` per budget (observed and predicted best k, the observed error of the
    predicted pick) and summary numbers."""
    unit = bucket_unit / bucket_size  # law units per sample: one bucket = bucket_unit
    buckets = mean[mean["kind"] == "bucket"].sort_values(["first", "n"])
    firsts = sorted(buckets["first"].unique())
    curves = [
        (g["n"].to_numpy() * unit, g["error"].to_numpy(), bucket_size * unit)
        for g in (buckets[buckets["first"] == f] for f in firsts)
    ]
    fitted = fit_buckets(curves, grids["a"], grids["d"], grids["b"], grids["tau"], refine=refine)
    tops = mean[mean["kind"] == "top"]
    ns = np.sort(tops["n"].unique())
    table = predict_pools(fitted, ns * unit, bucket_size * unit, sorted(tops["k"].unique()), tau_scaling)
    table["n"] = np.tile(ns, len(table) // len(ns))
    table = table.merge(tops[["k", "n", "error"]].rename(columns={"error": "observed"}), on=["k", "n"])
    table["rel_error"] = (table["predicted"] - table["observed"]).abs() / table["observed"]
    at = table[table["n"].isin(list(budgets))]
    obs = at.pivot(index="n", columns="k", values="observed")
    pred = at.pivot(index="n", columns="k", values="predicted")
    best = pd.DataFrame({"n": obs.index.to_numpy(), "observed_best_k": obs.idxmin(axis=1).to_numpy().astype(int),
                         "predicted_best_k": pred.idxmin(axis=1).to_numpy().astype(int)})
    best["observed_best_error"] = obs.min(axis=1).to_numpy()
    best["error_of_predicted_pick"] = obs.to_numpy()[np.arange(len(obs)), [list(obs.columns).index(k) for k in best["predicted_best_k"]]]
    best["regret"] = best["error_of_predicted_pick"] / best["observed_best_error"] - 1.0
    order = best["observed_best_k"].to_numpy()
    summary = {
        "best_k_smallest_budget": int(order[0]),
        "best_k_largest_budget": int(order[-1]),
        "best_k_decreases": int(np.sum(np.diff(order) < 0)),  # violations of "non-decreasing in compute"
        "predicted_best_agreement": float(np.mean(best["observed_best_k"] == best["predicted_best_k"])),
        "predicted_best_regret_mean": float(best["regret"].mean()),
        "pool_prediction_mre": float(at["rel_error"].mean()),
        # top1 is bucket 1, whose curve the fit saw: only k >= 2 is a prediction of an unseen pool
        "pool_prediction_mre_unseen": float(at.loc[at["k"] >= 2, "rel_error"].mean()),
        "pool_prediction_mre_all_n": float(table["rel_error"].mean()),
        "abs_b_increases_with_noise": int(np.sum(np.diff(np.abs(fitted.b)) > 0)),  # violations of |b| falling
        "tau_noisiest_over_cleanest": float(fitted.tau[-1] / fitted.tau[0]),
        "bucket_fit_r2_min": float(min(fitted.r2)),
    }
    return {"fit": fitted, "pools": table, "best": best, "summary": summary}


def crossover_repetitions(mean: pd.DataFrame, bucket_size: int) -> float:
    """Epochs over the cleanest bucket after which the largest pool is (and stays) better
    than it: the analogue of the paper's 'unfiltered beats LAION after ~40 repetitions'.
    inf if it never is."""
    tops = mean[mean["kind"] == "top"].pivot_table(index="n", columns="k", values="error")
    better = (tops[tops.columns.max()] < tops[1]).to_numpy()
    for i in range(len(better)):
        if better[i:].all():
            return float(tops.index[i] / bucket_size)
    return float("inf")


def published(path, key: str = "tmars_imagenet1k_utility") -> dict:
    """The authors' fitted parameters (results/parameter_values.jsonl): the four T-MARS
    buckets top 0-10% .. 30-40% (the fifth entry, a random 25% of the top 40%, dropped
    as their estimate_best_pool.py does)."""
    import json
    from pathlib import Path

    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        if row["id"] == key:
            return {"a": row["best_a"], "d": row.get("d_value", 0.1), "b": row["b_values"][:4],
                    "tau": row["c_values"][:4], "names": row["names"][:4]}
    raise KeyError(f"{key!r} not in {path}")


def published_best_pools(params: dict, budgets: Sequence[float], bucket: float = PAPER_BUCKET) -> pd.DataFrame:
    """The authors' estimate_best_pool.py with their parameters: predicted error of the
    top-10%..top-40% pools (tau scaled by the number of buckets) at each budget."""
    fit = BucketFit(params["a"], params["d"], list(params["b"]), list(params["tau"]), float("nan"), [])
    table = predict_pools(fit, np.asarray(budgets, dtype=float), bucket, range(1, len(params["b"]) + 1), "repo")
    wide = table.pivot(index="n_law", columns="k", values="predicted")
    out = pd.DataFrame({"samples_seen": wide.index.to_numpy(), "best_k": wide.idxmin(axis=1).to_numpy().astype(int)})
    for k in wide.columns:
        out[f"top{k}_error"] = wide[k].to_numpy()
    return out
