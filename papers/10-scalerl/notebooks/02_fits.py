# %% [markdown]
# # 10 · ScaleRL — the sigmoid law: fits, extrapolation, A and B per recipe
# Reads `runs.csv` (notebook 01). Per run: the sigmoid R_C - R0 = (A - R0) / (1 + (C_mid / C)^B)
# (Eq. 1) fitted on [fit_start, 1] of its compute (the curve: A, B, C_mid), and both the sigmoid and
# a power law R_C - R0 = a C^b fitted on [fit_start, fit_end] only, each predicting the final pass
# rate. Feeds every claim of claims.yaml.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"fit_end": 0.6}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p10

# %%
from shared import notebook

run = notebook.start("10", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper10 import law, runs

table = run.load_table("runs")
fits = law.fit_runs(table, p.fit_start, p.fit_end, p.final_window, starts=p.fit_starts)
run.save_table(fits, "fits")
metrics = runs.claim_metrics(fits, p)
run.log_metrics(metrics)
fits.round(4)

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

main = table[table["seed"] == p.seed]
names = list(dict.fromkeys(main["recipe"]))
colors = dict(zip(names, sns.color_palette(n_colors=len(names))))
fig, ax = plt.subplots(figsize=(6, 4))
for name in names:
    g = main[main["recipe"] == name]
    f = fits[(fits["recipe"] == name) & (fits["seed"] == p.seed)].iloc[0]
    grid = np.linspace(g["flops"].max() * 0.01, g["flops"].max() * 2, 200)
    ax.plot(g["flops"] / 1e9, g["eval_sampled"], "o", ms=3, color=colors[name])
    ax.plot(grid / 1e9, law.sigmoid(grid, f["A"], f["B"], f["C_mid"], f["R0"]), color=colors[name],
            label=f"{name}: A={f['A']:.3f}, B={f['B']:.2f}")
    ax.axhline(f["A"], color=colors[name], ls=":", lw=0.8)
ax.set(xlabel="RL compute C (GFLOPs)", ylabel="held-out pass rate R (sampled)", title="sigmoid fits, whole runs")
ax.legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig1_curves")

# %%
fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), sharey=True)
for ax, name in zip(np.atleast_1d(axes), names):
    g = main[main["recipe"] == name]
    f = fits[(fits["recipe"] == name) & (fits["seed"] == p.seed)].iloc[0]
    c = g["flops"].to_numpy(float)
    used = law.window(c, p.fit_start, p.fit_end)
    grid = np.linspace(c.max() * 0.02, c.max(), 200)
    ax.plot(c[~used] / 1e9, g["eval_sampled"][~used], "o", ms=3, color="0.6", label="held out of the fit")
    ax.plot(c[used] / 1e9, g["eval_sampled"][used], "o", ms=3, color=colors[name], label="fitted")
    ax.plot(grid / 1e9, law.sigmoid(grid, f["half_A"], f["half_B"], f["half_C_mid"], f["R0"]), color=colors[name],
            label=f"sigmoid: err {f['sigmoid_error']:.3f}")
    ax.plot(grid / 1e9, law.power(grid, f["power_a"], f["power_b"], f["R0"]), "--", color="0.3",
            label=f"power law: err {f['power_error']:.3f}")
    ax.axvline(p.fit_end * c.max() / 1e9, color="0.8", lw=0.8)
    ax.set(title=name, xlabel="RL compute C (GFLOPs)")
    ax.legend(fontsize=7)
np.atleast_1d(axes)[0].set_ylabel("held-out pass rate R")
fig.suptitle(f"fit on [{p.fit_start:.0%}, {p.fit_end:.0%}] of the compute, extrapolated to 100%", fontsize=10)
fig.tight_layout()
run.save_figure(fig, "fig2_extrapolation")
