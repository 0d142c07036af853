# %% [markdown]
# # 17 · Farseer — the same method on our own tiny-LM grid
# The `scaling_grid` artifact (shared/lmgrid.py): tiny Llama-style models of >= 5 sizes,
# each trained on >= 5 token budgets on the stdlib corpus (one cosine run per cell). Both
# laws are fitted on every size but the largest, which is held out: an honest
# extrapolation error (the fit never saw a model that large). Then both laws are refitted on
# the whole grid for the in-range fit and the compute-optimal D/N on our fit.
# Feeds claims tiny-*.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"farseer_starts": 64}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p17

# %%
from shared import notebook

run = notebook.start("17", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import time

import pandas as pd
import torch

from paper17 import refit
from shared import lmgrid

torch.set_num_threads(1)
runs = lmgrid.load_runs(run.artifact("scaling_grid"))
runs = runs[runs["streams"] == 1] if "streams" in runs else runs  # plain models only (no ParScale streams)
grid = refit.from_runs(runs, p.tiny_n_column, p.tiny_unit)
print(f"{len(grid)} runs: {grid['N_raw'].nunique()} sizes x {grid['D_raw'].nunique()} token budgets; "
      f"N = {p.tiny_n_column}, val loss {grid['loss'].min():.3f} .. {grid['loss'].max():.3f}")
grid.pivot_table(index="N_raw", columns="D_raw", values="loss").round(3)

# %% [markdown]
# ## Fit on all but the largest model; predict the largest

# %%
train, test = refit.split_by_size(grid, holdout_sizes=p.tiny_holdout_sizes)
started = time.perf_counter()
fits_hold = refit.fit_laws(train, p.farseer_starts, p.chinchilla_starts, seed=run.seed,
                           piecewise_ratio=p.piecewise_ratio, piecewise_rounds=p.piecewise_rounds)
fits_all = refit.fit_laws(grid, p.farseer_starts, p.chinchilla_starts, seed=run.seed, warm=fits_hold,
                          piecewise_ratio=p.piecewise_ratio, piecewise_rounds=p.piecewise_rounds)
fit_s = time.perf_counter() - started
held = refit.fit_errors(fits_hold, test)
in_range = refit.fit_errors(fits_all, grid)
train_err = refit.fit_errors(fits_hold, train)
print(f"held out N > {train['N_raw'].max():.3g}: {len(test)} points")
pd.concat({"held out": pd.DataFrame(held).T, "in range (all)": pd.DataFrame(in_range).T}).round(5)

# %%
points = pd.concat([refit.predictions_table(fits_hold, train, "train"),
                    refit.predictions_table(fits_hold, test, "held out")], ignore_index=True)
run.save_table(points, "tiny_holdout_predictions")
run.save_table(refit.predictions_table(fits_all, grid, "all"), "tiny_all_predictions")
points[points["split"] == "held out"].round(4)

# %% [markdown]
# ## Compute-optimal D/N on our fit

# %%
budgets = refit.grid_budgets(grid, p.tiny_budget_span, p.tiny_budget_points)
curves = pd.concat([refit.optimal_ratio(fits_all[name], budgets, p.tiny_unit).assign(law=name)
                    for name in ("farseer", "chinchilla", "piecewise")], ignore_index=True)
run.save_table(curves, "tiny_compute_optimal")
far = curves[curves["law"] == "farseer"]["D_over_N"].to_numpy()
chin = curves[curves["law"] == "chinchilla"]["D_over_N"].to_numpy()
curves.pivot(index="C", columns="law", values="D_over_N").round(2)

# %%
metrics = {
    "tiny_points": len(grid),
    "tiny_sizes": int(grid["N_raw"].nunique()),
    "tiny_token_budgets": int(grid["D_raw"].nunique()),
    "tiny_farseer_r2": in_range["farseer"]["r2"],
    "tiny_chinchilla_r2": in_range["chinchilla"]["r2"],
    "tiny_piecewise_r2": in_range["piecewise"]["r2"],
    "tiny_farseer_mre": in_range["farseer"]["mre"],
    "tiny_chinchilla_mre": in_range["chinchilla"]["mre"],
    "tiny_train_farseer_mre": train_err["farseer"]["mre"],
    "tiny_train_chinchilla_mre": train_err["chinchilla"]["mre"],
    "tiny_holdout_farseer_mre": held["farseer"]["mre"],
    "tiny_holdout_chinchilla_mre": held["chinchilla"]["mre"],
    "tiny_holdout_piecewise_mre": held["piecewise"]["mre"],
    "tiny_holdout_mre_ratio": held["chinchilla"]["mre"] / held["farseer"]["mre"],
    "tiny_dn_farseer_low": float(far[0]),
    "tiny_dn_farseer_high": float(far[-1]),
    "tiny_dn_farseer_ratio": float(far[-1] / far[0]),
    "tiny_dn_chinchilla_ratio": float(chin[-1] / chin[0]),
    "tiny_dn_at_grid_edge": int(curves["at_grid_edge"].sum()),
}
run.log_metrics(metrics)
run.log_timings({"tiny_fits_s": fit_s})
{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}
