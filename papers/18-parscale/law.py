"""The parallel scaling law (ParScale, Eq. 5) on the published points and on our tiny LMs.

    L(N, P) = (A / (N (k ln P + 1)))^alpha + E          (shared.scaling.LAWS["parscale"])

N is the non-embedding parameter count (with ParScale's own extra parameters, as the
authors count it), P the number of parallel streams. A model with P streams behaves like
one with N (1 + k ln P) parameters: k is the whole story, and ``multiplier(k, P)`` says it.
The fit is the authors' (parametric_fit.py): Huber (delta 1e-3) on log loss from a grid of
starts; R^2 is on the loss itself. Extrapolation: fit on the smaller models only and
predict the largest ones, which the paper's fit never had to do.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from shared import scaling

DATA = Path(__file__).parent / "data" / "parscale_scaling_points.csv"
DATASETS = {"stack": "loss_stackv2_python", "pile": "loss_pile"}  # short name -> column of the CSV


def published_points() -> pd.DataFrame:
    """The 48 published runs, long format: dataset, size_label, P, N, loss (24 per dataset)."""
    wide = pd.read_csv(DATA, comment="#")
    frames = []
    for name, column in DATASETS.items():
        frames.append(pd.DataFrame({
            "dataset": name, "size_label": wide["size_label"], "P": wide["P"].astype(float),
            "N": wide["nonembedding_params"].astype(float), "loss": wide[column].astype(float),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def multiplier(k: float, streams: float) -> float:
    """Parameters a P-stream model is worth, as a multiple of its own: 1 + k ln P."""
    return 1.0 + k * math.log(streams)


def fit_law(points: pd.DataFrame, starts="grid", seed: int = 0) -> scaling.Fit:
    """The ParScale law fitted to a frame with columns N, P, loss."""
    inputs = {"N": points["N"].to_numpy(dtype=float), "P": points["P"].to_numpy(dtype=float)}
    return scaling.fit(scaling.LAWS["parscale"], inputs, points["loss"].to_numpy(dtype=float).copy(), starts=starts,
                       seed=seed)


def fit_row(fitted: scaling.Fit, **labels) -> dict:
    """One tidy row: labels, k, alpha, E, A, R^2, the P = 8 multiplier."""
    v = fitted.values
    return {**labels, "k": v["k"], "alpha": v["alpha"], "E": v["E"], "A": v["A"], "r2": fitted.r2,
            "multiplier_p8": multiplier(v["k"], 8), "n_points": fitted.n_points}


def refit_published(points: pd.DataFrame, holdout_sizes: list[str], starts="grid", seed: int = 0):
    """Per dataset: the fit on all 24 points, and the fit without ``holdout_sizes`` with its
    errors on them. Returns (fits table, predictions table, {dataset: full Fit})."""
    rows, preds, fits = [], [], {}
    for name, group in points.groupby("dataset", sort=False):
        full = fit_law(group, starts, seed)
        fits[name] = full
        train = group[~group["size_label"].isin(holdout_sizes)]
        test = group[group["size_label"].isin(holdout_sizes)]
        if test.empty or train.empty:
            raise ValueError(f"holdout_sizes: {holdout_sizes} must name some but not all of {sorted(group['size_label'].unique())}")
        small = fit_law(train, starts, seed)
        err = scaling.errors(small, {"N": test["N"].to_numpy(), "P": test["P"].to_numpy()}, test["loss"].to_numpy().copy())
        rows.append(fit_row(full, dataset=name, fit="all points"))
        rows.append({**fit_row(small, dataset=name, fit=f"without {', '.join(holdout_sizes)}"),
                     "extrap_mre": err["mre"], "extrap_max_re": err["max_re"]})
        for fit_name, f in (("all points", full), ("extrapolation", small)):
            preds.append(group.assign(fit=fit_name, predicted=f.predict({"N": group["N"].to_numpy(), "P": group["P"].to_numpy()}).ravel(),
                                      held_out=group["size_label"].isin(holdout_sizes) & (fit_name == "extrapolation")))
    return pd.DataFrame(rows), pd.concat(preds, ignore_index=True), fits


# ----------------------------------------------------------------------------- our runs
def runs_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Our grid (shared.lmgrid.load_runs) as the law's points: model, P, N (non-embedding), loss (validation)."""
    need = {"model", "streams", "nonembedding_params", "val_loss"}
    missing = need - set(runs.columns)
    if missing:
        raise ValueError(f"runs: missing columns {sorted(missing)}; have {sorted(runs.columns)}")
    return pd.DataFrame({"model": runs["model"], "P": runs["streams"].astype(float),
                         "N": runs["nonembedding_params"].astype(float), "loss": runs["val_loss"].astype(float)})


def gains_by_model(points: pd.DataFrame) -> pd.DataFrame:
    """Per base model: loss at each P, the drop from P = 1, and whether loss falls at every step up in P."""
    rows = []
    for model, group in points.groupby("model", sort=False):
        g = group.sort_values("P")
        losses = g["loss"].to_numpy()
        base = float(g.loc[g["P"] == 1, "loss"].iloc[0]) if (g["P"] == 1).any() else math.nan
        for P, loss in zip(g["P"], losses):
            rows.append({"model": model, "P": int(P), "loss": loss, "gain_vs_p1": base - loss})
        rows[-1]["monotone"] = bool(np.all(np.diff(losses) < 0))
    out = pd.DataFrame(rows)
    out["monotone"] = out.groupby("model")["monotone"].transform(lambda s: s.dropna().iloc[0] if s.notna().any() else False)
    return out


# ----------------------------------------------------------------------------- equal-loss parameter scaling
def widen(spec, target_nonembedding: float, multiple: int | None = None):
    """The spec, wider (d_model and d_ff scaled together, same depth and heads), whose
    non-embedding parameter count is closest to ``target_nonembedding``: the
    parameter-scaled model the law says has the loss of the P-stream one. Widths up to
    8 x d_model (~64 x the parameters); a target beyond the widest raises rather than
    returning a model that misses it (the cost comparison would be silently wrong)."""
    from shared import zoo

    multiple = multiple or 2 * spec.n_heads  # head_dim stays an even integer
    ratio = spec.d_ff / spec.d_model
    best = None
    for d in range(spec.d_model, 8 * spec.d_model + 1, multiple):
        d_ff = max(8, int(round(ratio * d / 8)) * 8)
        cand = spec.model_copy(update={"d_model": d, "d_ff": d_ff})
        cand = zoo.ModelSpec(**cand.model_dump())  # re-validate
        n = zoo.param_counts(cand)["non_embedding"]
        if best is None or abs(n - target_nonembedding) < abs(best[1] - target_nonembedding):
            best = (cand, n)
        if n >= target_nonembedding:
            break
    else:
        low = zoo.param_counts(spec)["non_embedding"]
        raise ValueError(f"widen: target {target_nonembedding:.4g} non-embedding parameters is beyond the search range "
                         f"{low:.4g} to {n:.4g} (d_model {spec.d_model} to {d})")
    return best[0]
