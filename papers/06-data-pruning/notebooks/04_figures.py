# %% [markdown]
# # 06 · Beyond neural scaling laws — figures
# Plots only: reads the tables notebooks 01-03 saved (simulation points, theory lines,
# digits curves) and draws the four figures of the paper's page.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_dim": 200}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p06

# %%
from shared import notebook

run = notebook.start("06", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

grid = run.load_table("perceptron_grid")
dense = run.load_table("perceptron_theory_dense")
frontier_sim = run.load_table("frontier_sim")
frontier_theory = run.load_table("frontier_theory")
theta_grid = run.load_table("theta_grid")
theta_dense = run.load_table("theta_theory_dense")
digits = run.load_table("digits_curves")
subtitle = f"N = {p.n_dim}, {p.n_seeds} seeds, {run.scale} scale"

# %% [markdown]
# ## Fig. 1 — test error against pruned size: keep hard vs keep easy, theory and simulation

# %%
colors = dict(zip(p.alpha_totals, sns.color_palette("viridis", len(p.alpha_totals))))
fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
random_sim = grid[grid["strategy"] == "random"]
for ax, strategy in zip(axes, ("hard", "easy")):
    for a_tot in p.alpha_totals:
        line = dense[(dense["strategy"] == strategy) & np.isclose(dense["alpha_total"], a_tot)]
        pts = grid[(grid["strategy"] == strategy) & np.isclose(grid["alpha_total"], a_tot)]
        ax.plot(line["alpha_prune"], line["theory_error"], color=colors[a_tot], lw=1.5, label=f"α_tot = {a_tot:g}")
        ax.errorbar(pts["alpha_prune"], pts["test_error"], yerr=pts["test_error_sem"], fmt="o", ms=4,
                    color=colors[a_tot], capsize=2)
    ax.plot(frontier_theory["alpha_prune"], frontier_theory["random_error"], "k--", lw=1.2, label="random (theory)")
    ax.plot(random_sim["alpha_prune"], random_sim["test_error"], "kx", ms=4, label="random (simulation)")
    ax.set(xscale="log", yscale="log", xlabel="α_prune = f · α_tot  (kept examples per dimension)",
           title=f"keep {strategy}")
axes[0].set_ylabel("test error  (angle to teacher / π)")
axes[1].legend(fontsize=7, ncol=2, loc="lower left")
fig.suptitle(f"Pruned perceptron: lines = replica theory, points = max-margin students ({subtitle})")
run.save_figure(fig, "fig1_keep_hard_vs_easy")

# %% [markdown]
# ## Fig. 2 — the Pareto frontier against random pruning's power law

# %%
fig, ax = plt.subplots(figsize=(6.2, 4.5))
ax.plot(frontier_theory["alpha_prune"], frontier_theory["random_error"], "k--", lw=1.2, label="random pruning (theory)")
ax.plot(frontier_sim["alpha_prune"], frontier_sim["random_error"], "kx", label="random pruning (simulation)")
ax.plot(frontier_theory["alpha_prune"], frontier_theory["frontier_error"], color="C3", lw=1.8,
        label=f"Pareto frontier, α_tot ≤ {max(p.alpha_totals):g} (theory)")
ax.plot(frontier_sim["alpha_prune"], frontier_sim["frontier_error"], "o", color="C3", ms=5,
        label="Pareto frontier (simulation)")
ax.plot(frontier_theory["alpha_prune"], frontier_theory["frontier_error_wide"], ":", color="C3", lw=1.5,
        label=f"Pareto frontier, α_tot ≤ {p.frontier_alpha_total_max:g} (theory)")
ax.set(xscale="log", yscale="log", xlabel="α_prune (kept examples per dimension)", ylabel="test error",
       title="Best pruning vs random: beyond the power law")
ax.legend(fontsize=7)
run.save_figure(fig, "fig2_pareto_frontier")

# %% [markdown]
# ## Fig. 3 — an imperfect metric: probe at angle θ to the teacher

# %%
fig, ax = plt.subplots(figsize=(6.2, 4.5))
pal = dict(zip(p.thetas_deg, sns.color_palette("rocket", len(p.thetas_deg) + 1)))
for th in p.thetas_deg:
    line = theta_dense[(theta_dense["strategy"] == "hard") & np.isclose(theta_dense["theta_deg"], th)]
    pts = theta_grid[(theta_grid["strategy"] == "hard") & np.isclose(theta_grid["theta_deg"], th)]
    ax.plot(line["keep_fraction"], line["theory_error"], color=pal[th], lw=1.5, label=f"keep hard, θ = {th:g}°")
    ax.errorbar(pts["keep_fraction"], pts["test_error"], yerr=pts["test_error_sem"], fmt="o", ms=4, color=pal[th],
                capsize=2)
rline = theta_dense[theta_dense["strategy"] == "random"]
rpts = theta_grid[theta_grid["strategy"] == "random"]
ax.plot(rline["keep_fraction"], rline["theory_error"], "k--", lw=1.2, label="random")
ax.plot(rpts["keep_fraction"], rpts["test_error"], "kx")
ax.axvline(p.theta_claim_keep_fraction, color="grey", lw=0.8, ls=":")
ax.set(xscale="log", yscale="log", xlabel="keep fraction f", ylabel="test error",
       title=f"Imperfect metric, α_tot = {p.theta_alpha_total:g}: lines theory, points simulation")
ax.legend(fontsize=7)
run.save_figure(fig, "fig3_imperfect_metric")

# %% [markdown]
# ## Fig. 4 — digits: self-supervised prototypes vs random and supervised metrics

# %%
labels = {
    "random": "random",
    "prototype_hard": "self-sup. prototypes, keep hard",
    "prototype_easy": "self-sup. prototypes, keep easy",
    "supervised_prototype_hard": "supervised prototypes, keep hard",
    "el2n_hard": "EL2N-style (supervised), keep hard",
}
styles = {"random": "k--", "prototype_hard": "C0-", "prototype_easy": "C0:", "supervised_prototype_hard": "C2-",
          "el2n_hard": "C1-"}
fig, ax = plt.subplots(figsize=(6.2, 4.5))
full = digits[(digits["arm"] == "random") & np.isclose(digits["keep_fraction"], 1.0)]["accuracy"].iloc[0]
for arm, label in labels.items():
    rows = digits[digits["arm"] == arm].sort_values("keep_fraction")
    xs = list(rows["keep_fraction"]) + ([1.0] if arm != "random" else [])
    ys = list(rows["accuracy"]) + ([full] if arm != "random" else [])
    es = list(rows["accuracy_sem"]) + ([0.0] if arm != "random" else [])
    ax.errorbar(xs, ys, yerr=es, fmt=styles[arm], marker="o", ms=3, capsize=2, label=label)
ax.set(xlabel="keep fraction f", ylabel="test accuracy", xscale="log",
       title=f"Digits, logistic regression on the kept images ({p.digits_n_seeds} splits)")
ax.legend(fontsize=7)
run.save_figure(fig, "fig4_digits_prototypes")
