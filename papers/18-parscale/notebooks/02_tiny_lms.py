# %% [markdown]
# # 18 · Parallel Scaling Law — our tiny LMs
# The `parscale_grid` artifact (shared.lmgrid, its own pipeline stage) trains tiny Llama
# models of several sizes with P parallel streams (shared.parscale: per-stream prefix KV,
# one batched forward, dynamic weighted aggregation with label smoothing 0.1) on the corpus
# artifact's tokens; here we only read its runs. We check that validation loss falls with P
# at every size and fit the paper's law to our (N, P, loss) points. Feeds the claims
# ours-loss-decreases-with-p, ours-p4-gain and ours-k-plausible.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"grid_fit_starts": 64}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p18

# %%
from shared import notebook

run = notebook.start("18", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper18 import law
from shared import lmgrid

torch.set_num_threads(p.num_threads)
runs = lmgrid.load_runs(run.artifact("parscale_grid"))
points = law.runs_points(runs)
run.save_table(runs, "grid_runs")
gains = law.gains_by_model(points)
run.save_table(gains, "grid_gains")
gains.round(4)

# %%
fitted = law.fit_law(points, starts=p.grid_fit_starts, seed=run.seed)
row = law.fit_row(fitted, dataset="ours", fit="all runs")
run.save_table(__import__("pandas").DataFrame([row]), "grid_fit")
p4 = gains[gains["P"] == 4]["gain_vs_p1"]
metrics = {
    "ours_k": round(row["k"], 4),
    "ours_alpha": round(row["alpha"], 4),
    "ours_E": round(row["E"], 4),
    "ours_r2": round(row["r2"], 4),
    "ours_multiplier_p8": round(row["multiplier_p8"], 4),
    "ours_monotone_share": round(float(gains.groupby("model")["monotone"].first().mean()), 4),
    "ours_min_gain_p4": round(float(p4.min()), 4) if len(p4) else float("nan"),
}
run.log_metrics(metrics)
metrics

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots(figsize=(5.5, 4))
models = list(dict.fromkeys(points["model"]))
for model, color in zip(models, plt.cm.viridis(np.linspace(0, 0.9, len(models)))):
    g = points[points["model"] == model].sort_values("P")
    ax.plot(g["P"], g["loss"], "o", color=color, label=f"{model} (N={g['N'].iloc[0]:,.0f})")
    grid = np.geomspace(1, g["P"].max(), 50)
    n = np.interp(np.log(grid), np.log(g["P"]), g["N"])  # N grows slightly with P (prefixes, MLP)
    ax.plot(grid, fitted.predict({"N": n, "P": grid}).ravel(), color=color)
ax.set(xscale="log", xlabel="parallel streams P", ylabel="validation loss", title=f"our runs: k={row['k']:.3f}")
ax.set_xticks(sorted(points["P"].unique()), [str(int(v)) for v in sorted(points["P"].unique())])
ax.legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig2_tiny_lms")
