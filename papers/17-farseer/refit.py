"""Paper 17 (Farseer): fit Farseer's law and Chinchilla's to a loss grid L(N, D), compare them.

The same steps serve the published Farseer grid (notebook 01) and our own tiny-LM grid
(notebook 02), so both are done the same way:

- ``split_by_size``: hold out the largest model sizes (what extrapolation means here: the
  fit never sees a model as large as the ones it predicts);
- ``fit_laws``: both laws with ``shared.scaling`` (Huber on log loss, many starts). Farseer's
  9 parameters are started from its own differential piecewise estimate (``piecewise``,
  the paper's fitting method) plus Sobol points, Chinchilla from Sobol points or Hoffmann's
  grid. A ``warm`` fit (of a *smaller* training set) adds its optima as starts: fits run
  from the smallest training set to the largest, so no fit starts from a solution that has
  seen the points it is scored on;
- ``fit_errors``: in-range and held-out relative errors of each law;
- ``optimal_ratio``: the compute-optimal D/N against the budget C = 6 N D.

Inputs are passed to the laws in ``unit``s (1e9 for the published grid, 1e6 for the
tiny LMs) so Farseer's N^q and D^(-...) stay O(1); budgets are converted back to FLOPs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper17 import piecewise
from shared import scaling

DATA = Path(__file__).parent / "data" / "farseer_scaling_law__train.csv"
LAWS = ("farseer", "chinchilla")
WARM_OPTIMA = 3  # a warm start adds the previous fit's best distinct optima (a few rows: rows cost time)


def load_published(unit: float = 1e9, path: Path = DATA) -> pd.DataFrame:
    """The published grid: N, D in ``unit``s (N_raw, D_raw in parameters and tokens), loss."""
    raw = pd.read_csv(path)
    return pd.DataFrame(
        {"N": raw["N"] / unit, "D": raw["D"] / unit, "loss": raw["loss"], "N_raw": raw["N"], "D_raw": raw["D"]}
    ).sort_values(["N", "D"], ignore_index=True)


def from_runs(runs: pd.DataFrame, n_column: str, unit: float, loss_column: str = "val_loss") -> pd.DataFrame:
    """lmgrid.load_runs(...) -> the same columns as ``load_published`` (D = tokens trained)."""
    missing = [c for c in (n_column, "tokens", loss_column) if c not in runs]
    if missing:
        raise ValueError(f"runs: missing columns {missing}; have {list(runs.columns)}")
    frame = pd.DataFrame(
        {"N": runs[n_column] / unit, "D": runs["tokens"] / unit, "loss": runs[loss_column],
         "N_raw": runs[n_column].astype(float), "D_raw": runs["tokens"].astype(float)}
    )
    return frame.sort_values(["N", "D"], ignore_index=True)


def sizes(df: pd.DataFrame) -> np.ndarray:
    return np.sort(df["N_raw"].unique())


def split_by_size(df: pd.DataFrame, holdout_sizes: int = 0, max_n: float | None = None):
    """(train, test): the ``holdout_sizes`` largest model sizes held out, or every size > max_n (raw)."""
    all_sizes = sizes(df)
    if max_n is not None:
        cut = max_n
    else:
        if not 1 <= holdout_sizes < len(all_sizes) - 1:
            raise ValueError(f"holdout_sizes: 1 to {len(all_sizes) - 2} (the grid has {len(all_sizes)} sizes), got {holdout_sizes}")
        cut = all_sizes[-holdout_sizes - 1]
    train, test = df[df["N_raw"] <= cut * (1 + 1e-9)], df[df["N_raw"] > cut * (1 + 1e-9)]
    if train["N_raw"].nunique() < 3 or test.empty:
        raise ValueError(f"split at N <= {cut:.3g}: {train['N_raw'].nunique()} training sizes, {len(test)} test points")
    return train.reset_index(drop=True), test.reset_index(drop=True)


def fit_laws(
    train: pd.DataFrame,
    farseer_starts: int,
    chinchilla_starts: int | str,
    seed: int = 0,
    warm: dict[str, scaling.Fit] | None = None,
    piecewise_ratio: float = 2.0,
    piecewise_rounds: int = 2,
) -> dict[str, scaling.Fit]:
    """Both laws fitted to ``train`` (columns N, D, loss), plus the pure piecewise estimate.

    Returns {"farseer": Fit, "chinchilla": Fit, "piecewise": dict of Farseer params}."""
    pw = piecewise.fit(train, ratio=piecewise_ratio, rounds=piecewise_rounds)
    far = scaling.farseer
    starts = [np.array([[pw[p] for p in far.params]])]
    if farseer_starts:
        starts.append(far.start_points(farseer_starts, seed))
    if warm:
        starts.append(warm["farseer"].optima[:WARM_OPTIMA])
    farseer = scaling.fit(far, train, "loss", starts=np.vstack(starts), seed=seed)
    chin_starts = chinchilla_starts
    if warm and not isinstance(chinchilla_starts, str):
        chin_starts = np.vstack([scaling.chinchilla.start_points(chinchilla_starts, seed), warm["chinchilla"].optima[:WARM_OPTIMA]])
    chinchilla = scaling.fit(scaling.chinchilla, train, "loss", starts=chin_starts, seed=seed)
    return {"farseer": farseer, "chinchilla": chinchilla, "piecewise": pw}


def predict(fits: dict, name: str, df: pd.DataFrame) -> np.ndarray:
    if name == "piecewise":
        return scaling.farseer.predict(fits["piecewise"], N=df["N"].to_numpy(), D=df["D"].to_numpy())
    return fits[name].predict(df).ravel()


def fit_errors(fits: dict, df: pd.DataFrame, names=("farseer", "chinchilla", "piecewise")) -> dict[str, dict[str, float]]:
    y = df["loss"].to_numpy()
    return {name: scaling.prediction_errors(predict(fits, name, df), y) for name in names}


def predictions_table(fits: dict, df: pd.DataFrame, split: str, names=("farseer", "chinchilla", "piecewise")) -> pd.DataFrame:
    """One row per point: N, D (raw), loss, each law's prediction and relative error."""
    out = df[["N_raw", "D_raw", "loss"]].rename(columns={"N_raw": "N", "D_raw": "D"}).assign(split=split)
    for name in names:
        pred = predict(fits, name, df)
        out[f"pred_{name}"] = pred
        out[f"re_{name}"] = (pred - df["loss"].to_numpy()) / df["loss"].to_numpy()
    return out.reset_index(drop=True)


def optimal_ratio(fit_or_params, budgets, unit: float) -> pd.DataFrame:
    """Compute-optimal N, D, D/N and loss at each budget C (FLOPs), C = 6 N D."""
    fitted = fit_or_params
    if isinstance(fit_or_params, dict):  # piecewise params: wrap as a Fit-like object
        fitted = _params_fit(fit_or_params)
    return scaling.compute_optimal(fitted, budgets, n_unit=unit, d_unit=unit)


def bootstrap_ratio(boot: scaling.Bootstrap, budgets, unit: float) -> pd.DataFrame:
    """D/N at each budget for every bootstrap resample: [resample, C, D_over_N]."""
    rows = []
    for i, row in boot.samples.iterrows():
        params = {p: float(row[p]) for p in boot.fit.law.params}
        curve = scaling.compute_optimal(_params_fit(params, boot.fit.law), budgets, n_unit=unit, d_unit=unit)
        rows.append(curve.assign(resample=i)[["resample", "C", "D_over_N", "at_grid_edge"]])
    return pd.concat(rows, ignore_index=True)


def ratio_at(curve: pd.DataFrame, budget: float) -> float:
    """D/N of a compute-optimal curve at one of its budgets."""
    hit = curve[np.isclose(curve["C"], budget, rtol=1e-9)]
    if hit.empty:
        raise ValueError(f"budget {budget:g} is not one of the curve's budgets")
    return float(hit["D_over_N"].iloc[0])


def _params_fit(params: dict, law: scaling.Law = scaling.farseer) -> scaling.Fit:
    return scaling.fixed_fit(law, params)


def grid_budgets(df: pd.DataFrame, span: tuple[float, float], points: int) -> list[float]:
    """Budgets from the grid's smallest 6ND x 10^span[0] to its largest x 10^span[1] (log-spaced)."""
    flops = 6.0 * df["N_raw"] * df["D_raw"]
    lo, hi = np.log10(flops.min()) + span[0], np.log10(flops.max()) + span[1]
    if not lo < hi:
        raise ValueError(f"budget span {span}: empty range of budgets")
    return list(10 ** np.linspace(lo, hi, points))


def optima_table(fitted: scaling.Fit, df: pd.DataFrame, budgets, unit: float) -> pd.DataFrame:
    """Every distinct optimum the multi-start reached: its objective and its D/N at ``budgets``.
    Near-equal objectives with far-apart D/N mean the data do not pin the extrapolation down."""
    y = df["loss"].to_numpy()
    rows = []
    for k, theta in enumerate(fitted.optima):
        params = dict(zip(fitted.law.params, map(float, theta)))
        pred = fitted.law.predict(params, N=df["N"].to_numpy(), D=df["D"].to_numpy())
        curve = scaling.compute_optimal(_params_fit(params, fitted.law), budgets, n_unit=unit, d_unit=unit)
        rows.append({"optimum": k, "objective": scaling.huber_objective(pred, y), **params,
                     **{f"dn_{c:.0e}": v for c, v in zip(budgets, curve["D_over_N"])}})
    return pd.DataFrame(rows)
