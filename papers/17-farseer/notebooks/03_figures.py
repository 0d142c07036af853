# %% [markdown]
# # 17 · Farseer — figures
# Plots only, from the tables notebooks 01 and 02 saved: fitted curves against the data
# (both laws, largest sizes held out), relative errors by model size (the paper's Fig. 1a),
# and the compute-optimal D/N against the budget (Fig. 1b), for the published grid and ours.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"farseer_starts": 64}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p17

# %%
from shared import notebook

run = notebook.start("17", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

LAW_COLORS = {"farseer": "tab:red", "chinchilla": "tab:blue", "piecewise": "tab:orange"}
LAW_NAMES = {"farseer": "Farseer (robust joint fit)", "chinchilla": "Chinchilla",
             "piecewise": "Farseer (piecewise, paper's method)"}
grids = {
    "published Farseer grid": (run.load_table("published_holdout_predictions"), run.load_table("published_all_predictions"),
                               run.load_table("published_compute_optimal")),
    "our tiny-LM grid": (run.load_table("tiny_holdout_predictions"), run.load_table("tiny_all_predictions"),
                         run.load_table("tiny_compute_optimal")),
}


def fit_panel(ax, points, law, title):
    """Data (markers) and the law's predictions (lines) against D, one colour per N; held out hollow."""
    sizes = np.sort(points["N"].unique())
    shown = sorted(set(sizes[::max(len(sizes) // 6, 1)]) | set(points.loc[points["split"] == "held out", "N"]))
    colors = dict(zip(shown, sns.color_palette("viridis", len(shown))))
    for n in shown:
        rows = points[points["N"] == n].sort_values("D")
        held = rows["split"].iloc[0] == "held out"
        ax.scatter(rows["D"], rows["loss"], s=14, color=colors[n], facecolors="none" if held else colors[n],
                   label=f"N={n:.2g}" + (" (held out)" if held else ""))
        ax.plot(rows["D"], rows[f"pred_{law}"], color=colors[n], lw=1.2, ls="--" if held else "-")
    ax.set(xscale="log", xlabel="D (tokens)", ylabel="loss", title=title)


# %% [markdown]
# ## Fitted curves against the data, the largest sizes held out (dashed: extrapolation)

# %%
for key, (points, _, _) in grids.items():
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), sharey=True)
    for ax, law in zip(axes, ("farseer", "chinchilla")):
        mre = points.loc[points["split"] == "held out", f"re_{law}"].abs().mean()
        fit_panel(ax, points, law, f"{LAW_NAMES[law]}: held-out mean |rel. error| {mre:.2%}")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"{key}: fitted on the smaller sizes, largest held out ({run.scale} scale)")
    run.save_figure(fig, "fig1_fits_published" if key.startswith("published") else "fig4_fits_tiny")

# %% [markdown]
# ## Residuals: mean relative error by model size (cf. the paper's Fig. 1a)

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
for col, (key, (points, all_points, _)) in enumerate(grids.items()):
    for row, (frame, what) in enumerate(((all_points, "fitted on every size (in range)"),
                                         (points, "largest sizes held out (shaded)"))):
        ax = axes[row, col]
        for law in ("farseer", "chinchilla", "piecewise"):
            per_n = frame.groupby("N")[f"re_{law}"].apply(lambda r: r.abs().mean())
            ax.plot(per_n.index, per_n.values, "o-", ms=3, color=LAW_COLORS[law], label=LAW_NAMES[law])
        if "held out" in set(frame["split"]):
            ax.axvspan(frame.loc[frame["split"] == "held out", "N"].min() * 0.95, frame["N"].max() * 1.05,
                       color="grey", alpha=0.15)
        ax.set(xscale="log", yscale="log", xlabel="N (parameters)", ylabel="mean |relative error|",
               title=f"{key}: {what}")
axes[0, 0].legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig2_residuals")

# %% [markdown]
# ## Compute-optimal D/N against the budget C = 6ND (cf. the paper's Fig. 1b)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
for ax, (key, (_, _, curves)) in zip(axes, grids.items()):
    for law in ("farseer", "chinchilla", "piecewise"):
        c = curves[curves["law"] == law]
        ax.plot(c["C"], c["D_over_N"], "o-", ms=3, color=LAW_COLORS[law], label=LAW_NAMES[law])
        if law == "farseer" and "low" in c and c["low"].notna().any():
            ax.fill_between(c["C"], c["low"], c["high"], color=LAW_COLORS[law], alpha=0.2, label="Farseer 95% bootstrap")
    ax.axhline(20, color="black", lw=0.8, ls=":", label="D/N = 20 (Chinchilla's rule of thumb)")
    ax.set(xscale="log", yscale="log", xlabel="compute budget C (FLOPs)", ylabel="compute-optimal D/N", title=key)
axes[0].legend(fontsize=7)
run.save_figure(fig, "fig3_optimal_dn")
