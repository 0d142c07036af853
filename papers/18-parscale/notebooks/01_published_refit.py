# %% [markdown]
# # 18 · Parallel Scaling Law — refit of the 48 published points
# The authors trained 6 sizes (0.5-4.4B non-embedding parameters) x P in {1, 2, 4, 8} on
# Stack-V2 Python and on the Pile (42B tokens each) and fitted
# L = (A / (N (k ln P + 1)))^alpha + E with a Huber loss on log loss (parametric_fit.py).
# We refit the same points with `shared.scaling` (the law `parscale`), per dataset: k,
# alpha, E and R^2 against the paper's, the parameter multiplier 1 + k ln 8 of P = 8, and an
# extrapolation the paper did not make: fit without the two largest sizes, predict them.
# Feeds the claims refit-k-*, refit-r2-*, p8-multiplier-stack and extrapolation-*.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"fit_starts": 64}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p18

# %%
from shared import notebook

run = notebook.start("18", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper18 import law

torch.set_num_threads(p.num_threads)
points = law.published_points()
fits, predictions, full = law.refit_published(points, p.holdout_sizes, starts=p.fit_starts, seed=run.seed)
run.save_table(fits, "published_fits")
run.save_table(predictions, "published_predictions")
fits.round(4)

# %% [markdown]
# Bootstrap (resampling the 24 points of a dataset) for the uncertainty of k.

# %%
from shared import scaling

if p.bootstrap:
    cis = []
    for name, fitted in full.items():
        group = points[points["dataset"] == name]
        boot = scaling.bootstrap(fitted, {"N": group["N"].to_numpy(), "P": group["P"].to_numpy()},
                                 group["loss"].to_numpy().copy(), n=p.bootstrap, seed=run.seed)
        cis.append(boot.ci().loc[["k", "alpha", "E"]].reset_index().assign(dataset=name))
    ci = __import__("pandas").concat(cis, ignore_index=True)
    run.save_table(ci, "published_bootstrap_ci")
    ci.round(4)

# %%
metrics = {}
for r in fits.itertuples():
    key = r.dataset if r.fit == "all points" else f"{r.dataset}_extrap"
    metrics[f"published_{key}_k"] = round(r.k, 4)
    metrics[f"published_{key}_alpha"] = round(r.alpha, 4)
    metrics[f"published_{key}_E"] = round(r.E, 4)
    metrics[f"published_{key}_r2"] = round(r.r2, 5)
    metrics[f"published_{key}_multiplier_p8"] = round(r.multiplier_p8, 4)
    if r.fit != "all points":
        metrics[f"published_{r.dataset}_extrap_max_re"] = round(r.extrap_max_re, 5)
        metrics[f"published_{r.dataset}_extrap_mre"] = round(r.extrap_mre, 5)
run.log_metrics(metrics)
metrics

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, (name, fitted) in zip(axes, full.items()):
    group = points[points["dataset"] == name]
    grid = np.geomspace(group["N"].min() * 0.9, group["N"].max() * 1.1, 100)
    for P, color in zip([1, 2, 4, 8], plt.cm.viridis(np.linspace(0, 0.9, 4))):
        g = group[group["P"] == P]
        ax.scatter(g["N"], g["loss"], color=color, label=f"P={P}", zorder=3)
        ax.plot(grid, fitted.predict({"N": grid, "P": np.full_like(grid, P)}).ravel(), color=color)
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="final loss",
           title=f"{name}: k={fitted.values['k']:.3f}, R²={fitted.r2:.4f}")
    ax.legend()
fig.tight_layout()
run.save_figure(fig, "fig1_published_refit")
