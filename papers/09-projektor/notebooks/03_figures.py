# %% [markdown]
# # 09 · Projektor — figures
# Plots only: reads the tables notebooks 01-02 saved. Predicted against actual accuracy per
# method, the error of each method with error bars, and the selected mixture on the simplex.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"pilot_repeats": 5}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p09

# %%
from shared import notebook

run = notebook.start("09", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

predictions = run.load_table("predictions")
mae = run.load_table("mae")
selection = run.load_table("selection")
path = run.load_table("selection_path")
names = run.load_table("sources")["source"].tolist()
labels = {"projektor": "Projektor (OT + projection)", "power_law": "per-mixture power law",
          "mixing_law": "mixing law", "last_value": "last value (acc at n1)",
          "projection_of_trained_pilots": "projection of trained pilots (stage 2 alone)"}
order = list(labels)
colors = dict(zip(order, sns.color_palette("deep", len(order))))
subtitle = f"digits, 3 sources, {run.scale} scale"

# %% [markdown]
# ## Fig. 1 — predicted vs actual accuracy at the claim size

# %%
at = predictions[predictions["n"] == p.claim_target]
fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), sharex=True, sharey=True)
lo, hi = at[["predicted", "actual"]].min().min() - 0.02, min(1.0, at[["predicted", "actual"]].max().max() + 0.02)
for ax, method in zip(axes, ["projektor", "power_law", "mixing_law", "last_value"]):
    rows = at[at["method"] == method]
    ax.errorbar(rows["actual"], rows["predicted"], xerr=rows["actual_sem"], fmt="o", ms=4, color=colors[method],
                capsize=2, lw=0.8)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(title=f"{labels[method]}\nMAE {100 * rows['abs_error'].mean():.1f} pts", xlabel="actual accuracy")
axes[0].set_ylabel("predicted accuracy")
for ax in axes:
    ax.set(xlim=(lo, hi), ylim=(lo, hi))
fig.suptitle(f"Predicted vs trained accuracy at n = {p.claim_target} (pilots n0 = {p.n0}, n1 = {p.n1}; {subtitle})", y=1.08)
run.save_figure(fig, "fig1_predicted_vs_actual")

# %% [markdown]
# ## Fig. 2 — prediction error per method and target size

# %%
fig, ax = plt.subplots(figsize=(8, 4))
targets = sorted(mae["n"].unique())
width = 0.8 / len(order)
for j, method in enumerate(order):
    rows = mae[mae["method"] == method].set_index("n").reindex(targets)
    xs = np.arange(len(targets)) + (j - (len(order) - 1) / 2) * width
    ax.bar(xs, 100 * rows["mean"], width, yerr=100 * rows["sem"], capsize=3, color=colors[method], label=labels[method])
ax.axhline(3.0, color="grey", ls=":", lw=1, label="3-point criterion")
ax.set(xticks=np.arange(len(targets)), xticklabels=[f"n = {n}" for n in targets],
       ylabel="mean |predicted − actual| (accuracy points)",
       title=f"Prediction error over the evaluation mixtures (± s.e.m.; {subtitle})")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
run.save_figure(fig, "fig2_mae_by_method")

# %% [markdown]
# ## Fig. 3 — the selected mixture on the simplex

# %%
def ternary(frame):
    q = frame[["p0", "p1", "p2"]].to_numpy(float)
    return q[:, 1] + q[:, 2] / 2, q[:, 2] * np.sqrt(3) / 2


grid = at[at["method"] == "projektor"]
fig, ax = plt.subplots(figsize=(6.5, 5.6))
x, y = ternary(grid)
points = ax.scatter(x, y, c=grid["actual"], cmap="viridis", s=160, edgecolor="k", lw=0.5, zorder=2)
fig.colorbar(points, ax=ax, label=f"trained accuracy at n = {p.claim_target}")
px, py = ternary(path)
ax.plot(px, py, "-", color="C3", lw=1.2, zorder=3, label="Projektor gradient path")
markers = {"projektor": ("*", "C3", 260), "power_law": ("s", colors["power_law"], 90),
           "mixing_law": ("D", colors["mixing_law"], 80), "last_value": ("^", colors["last_value"], 90),
           "grid_best": ("o", "none", 330)}
for _, row in selection.iterrows():
    marker, color, size = markers[row["method"]]
    sx, sy = ternary(row.to_frame().T)
    ax.scatter(sx, sy, marker=marker, s=size, facecolor=color, edgecolor="red" if row["method"] == "grid_best" else "k",
               lw=1.5, zorder=4, label=f"{row['method']}: {100 * row['actual']:.1f}%")
ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], "k-", lw=0.8)
for (cx, cy), name in zip([(0, 0), (1, 0), (0.5, np.sqrt(3) / 2)], names):
    ax.annotate(name, (cx, cy), textcoords="offset points", xytext=(0, -14 if cy == 0 else 8), ha="center", fontsize=9)
ax.set(xlim=(-0.1, 1.1), ylim=(-0.12, 0.98), aspect="equal", xticks=[], yticks=[],
       title=f"Mixture selection at n = {p.claim_target}: accuracy of the picks (trained)")
ax.legend(fontsize=7, loc="upper left")
run.save_figure(fig, "fig3_selection")
