# %% [markdown]
# # 17 · Farseer — refit of the published loss grid
# The training split of the published Farseer grid (404 runs, 25 model sizes from 1e8 to
# 6.4e9 parameters, 1e9 to 5e11 tokens; `data/SOURCE.md`). Farseer's 9-parameter law and
# Chinchilla's are fitted with `shared.scaling` (Huber on log loss, many starts); Farseer's
# own differential piecewise estimate is reported beside them. Then: fit quality in range,
# extrapolation to the largest sizes held out, the project page's "fit up to 1.9B / 5.4B,
# predict 6.4B" test, predictions at N >= 5e9, and the compute-optimal D/N against the
# budget with bootstrap intervals.
# Feeds claims pub-*.

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

import numpy as np
import pandas as pd
import torch
from IPython.display import display

from paper17 import refit
from shared import scaling

torch.set_num_threads(1)  # the fits are small batches: a second thread only adds contention
data = refit.load_published(p.unit)
all_sizes = refit.sizes(data)
print(f"{len(data)} points, {len(all_sizes)} model sizes {all_sizes.min():.3g} .. {all_sizes.max():.3g}, "
      f"loss {data['loss'].min():.3f} .. {data['loss'].max():.3f}")

# %% [markdown]
# ## Fits, from the smallest training set to the largest
# Each fit starts from Farseer's piecewise estimate of its own training set, Sobol points,
# and the optima of the previous (smaller) training set: never from a fit that saw its test points.

# %%
largest = all_sizes[-1]
holdout_cut = all_sizes[-p.holdout_sizes - 1]
plans = [(f"bound_{b:.3g}", b) for b in p.bound_max_n if b < holdout_cut] + [("holdout", holdout_cut)]
plans += [(f"bound_{b:.3g}", b) for b in p.bound_max_n if b >= holdout_cut] + [("all", None)]
fits, splits, fit_s = {}, {}, {}
warm = None
for name, cut in run.progress(plans, desc="fits", total=len(plans)):
    train, test = refit.split_by_size(data, max_n=cut) if cut is not None else (data, data.iloc[:0])
    started = time.perf_counter()
    fits[name] = refit.fit_laws(train, p.farseer_starts, p.chinchilla_starts, seed=run.seed, warm=warm,
                                piecewise_ratio=p.piecewise_ratio, piecewise_rounds=p.piecewise_rounds)
    fit_s[name] = time.perf_counter() - started
    splits[name] = (train, test)
    warm = fits[name]
    print(f"{name:>12}: {train['N_raw'].nunique()} sizes, {len(train)} points -> farseer R2 "
          f"{fits[name]['farseer'].r2:.5f}, chinchilla R2 {fits[name]['chinchilla'].r2:.5f} ({fit_s[name]:.1f} s)")

# %% [markdown]
# ## In-range fit quality (all 404 points)

# %%
in_range = refit.fit_errors(fits["all"], data)
pd.DataFrame(in_range).T.round(5)

# %% [markdown]
# ## Extrapolation: the largest sizes held out

# %%
train, test = splits["holdout"]
held = refit.fit_errors(fits["holdout"], test)
per_size = refit.predictions_table(fits["holdout"], test, "held out").groupby("N")[
    ["re_farseer", "re_chinchilla", "re_piecewise"]].agg(lambda r: np.abs(r).mean())
print(f"held out: N > {holdout_cut:.3g} ({test['N_raw'].nunique()} sizes, {len(test)} points)")
display(pd.DataFrame(held).T.round(5))
per_size.round(5)

# %%
target = data[data["N_raw"] == largest]
bound_rows = []
for b in p.bound_max_n:
    e = refit.fit_errors(fits[f"bound_{b:.3g}"], target)
    bound_rows.append({"fit_max_n": b, "target_n": largest, **{f"mre_{k}": v["mre"] for k, v in e.items()}})
bounds = pd.DataFrame(bound_rows)
bounds

# %% [markdown]
# ## Predictions at N >= 5e9 and the tables the figures read

# %%
tables = [refit.predictions_table(fits["holdout"], train, "train"),
          refit.predictions_table(fits["holdout"], test, "held out")]
points = pd.concat(tables, ignore_index=True)
in_range_points = refit.predictions_table(fits["all"], data, "all")
big = points[points["N"] >= p.prediction_min_n]
run.save_table(points, "published_holdout_predictions")
run.save_table(in_range_points, "published_all_predictions")
run.save_table(big, "published_predictions_large_n")
run.save_table(bounds, "published_bound_experiments")
big.groupby("N")[["loss", "pred_farseer", "pred_chinchilla", "pred_piecewise"]].mean().round(4)

# %% [markdown]
# ## Parameters with bootstrap intervals; compute-optimal D/N against the budget

# %%
started = time.perf_counter()
boots = {law: scaling.bootstrap(fits["all"][law], data, "loss", n=p.bootstrap_n, seed=run.seed,
                                 starts=p.bootstrap_starts) for law in refit.LAWS}
boot_s = time.perf_counter() - started
params = pd.concat([boots[law].ci().reset_index().assign(law=law) for law in refit.LAWS], ignore_index=True)
piece = pd.DataFrame({"param": list(fits["all"]["piecewise"]), "estimate": list(fits["all"]["piecewise"].values())})
params = pd.concat([params, piece.assign(law="piecewise")], ignore_index=True)
run.save_table(params, "published_params")

budgets = p.budgets
curves = pd.concat([refit.optimal_ratio(fits["all"][name], budgets, p.unit).assign(law=name)
                    for name in ("farseer", "chinchilla", "piecewise")], ignore_index=True)
boot_curves = refit.bootstrap_ratio(boots["farseer"], budgets, p.unit)
band = boot_curves.groupby("C")["D_over_N"].quantile([0.025, 0.975]).unstack().rename(columns={0.025: "low", 0.975: "high"})
curves = curves.merge(band.reset_index().assign(law="farseer"), on=["C", "law"], how="left")
run.save_table(curves, "published_compute_optimal")
lo_c, hi_c = p.dn_budgets
ratio_boot = (boot_curves[np.isclose(boot_curves["C"], hi_c)].set_index("resample")["D_over_N"]
              / boot_curves[np.isclose(boot_curves["C"], lo_c)].set_index("resample")["D_over_N"])
curves.pivot(index="C", columns="law", values="D_over_N").round(2)

# %%
optima = refit.optima_table(fits["all"]["farseer"], data, list(p.dn_budgets), p.unit)
run.save_table(optima, "published_farseer_optima")
near = optima[optima["objective"] <= optima["objective"].min() * 1.05]  # within 5% of the best objective
display(optima.round(5))
far_curve = curves[curves["law"] == "farseer"]
chin_curve = curves[curves["law"] == "chinchilla"]
dn = far_curve["D_over_N"].to_numpy()
metrics = {
    "pub_farseer_r2": in_range["farseer"]["r2"],
    "pub_chinchilla_r2": in_range["chinchilla"]["r2"],
    "pub_piecewise_r2": in_range["piecewise"]["r2"],
    "pub_farseer_mre": in_range["farseer"]["mre"],
    "pub_chinchilla_mre": in_range["chinchilla"]["mre"],
    "pub_piecewise_mre": in_range["piecewise"]["mre"],
    "pub_inrange_mre_ratio": in_range["chinchilla"]["mre"] / in_range["farseer"]["mre"],
    "pub_holdout_farseer_mre": held["farseer"]["mre"],
    "pub_holdout_chinchilla_mre": held["chinchilla"]["mre"],
    "pub_holdout_piecewise_mre": held["piecewise"]["mre"],
    "pub_holdout_farseer_max_re": held["farseer"]["max_re"],
    "pub_holdout_chinchilla_max_re": held["chinchilla"]["max_re"],
    "pub_holdout_mre_ratio": held["chinchilla"]["mre"] / held["farseer"]["mre"],
    "pub_holdout_sizes": int(test["N_raw"].nunique()),
    "pub_dn_farseer_low_budget": refit.ratio_at(far_curve, lo_c),
    "pub_dn_farseer_high_budget": refit.ratio_at(far_curve, hi_c),
    "pub_dn_farseer_ratio": refit.ratio_at(far_curve, hi_c) / refit.ratio_at(far_curve, lo_c),
    "pub_dn_farseer_ratio_ci_low": float(ratio_boot.quantile(0.025)),
    "pub_dn_farseer_increasing_share": float(np.mean(np.diff(dn) > 0)),
    "pub_dn_farseer_increasing_share_from_low": float(np.mean(np.diff(dn[far_curve["C"].to_numpy() >= lo_c * (1 - 1e-9)]) > 0)),
    "pub_dn_chinchilla_low_budget": refit.ratio_at(chin_curve, lo_c),
    "pub_dn_chinchilla_high_budget": refit.ratio_at(chin_curve, hi_c),
    "pub_dn_piecewise_ratio": (refit.ratio_at(curves[curves["law"] == "piecewise"], hi_c)
                               / refit.ratio_at(curves[curves["law"] == "piecewise"], lo_c)),
    "pub_bootstrap_n": p.bootstrap_n,
    "pub_farseer_optima_near_best": len(near),
    "pub_dn_high_spread_near_best": float(near.iloc[:, -1].max() / near.iloc[:, -1].min()),
    "pub_farseer_objective": fits["all"]["farseer"].loss,
}
for row in bound_rows:
    tag = f"{row['fit_max_n'] / 1e9:.1f}b".replace(".", "p")
    metrics[f"pub_bound_{tag}_farseer_mre"] = row["mre_farseer"]
    metrics[f"pub_bound_{tag}_chinchilla_mre"] = row["mre_chinchilla"]
    metrics[f"pub_bound_{tag}_piecewise_mre"] = row["mre_piecewise"]
if len(bound_rows) >= 2:
    metrics["pub_bound_error_shrinks"] = bound_rows[0]["mre_farseer"] / bound_rows[-1]["mre_farseer"]
run.log_metrics(metrics)
run.log_timings({f"pub_fit_{k}_s": v for k, v in fit_s.items()} | {"pub_bootstrap_s": boot_s})
{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}
