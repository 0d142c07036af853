# %% [markdown]
# # 34 · RL post-training scaling — GRPO on policies of several sizes, and data reuse
# Copies of the reasoning artifact's policies (shared.reasoning) are RL-trained with GRPO
# (shared.rl: group 8, group-std advantages, no KL, on-policy) on modular-arithmetic chains;
# the held-out ErrRate = 1 - pass@1 (sampled, or greedy: test_loss) is the test loss L, compute C the cumulative FLOPs
# of generation + training (rl.py's accounting), data D the samples generated. Per size we fit
# log L = -k log X + E0, then k(N) by the saturating k_max N/(N+N0) and by a linear-in-log N
# alternative (AIC), and count how often the larger size wins at equal C and at equal D.
# Then the paper's data-reuse experiment (Fig. 7): the same number of GRPO steps on a unique
# pool of steps x batch / tau problems, tau in reuse_taus, a few RL seeds each; the final
# ErrRate against tau = 1. (One notebook: the policies load once.) Feeds the claims ours-*, reuse-*.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"rl.steps": 30}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p34

# %%
from shared import notebook

run = notebook.start("34", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import torch

from paper34 import law, runs
from shared import reasoning

torch.set_num_threads(p.num_threads)
folder = run.artifact("reasoning")
policies = reasoning.load_policies(folder, device=run.device)
task = reasoning.load_task(folder)
train_difficulty = p.train_difficulty or task.train_difficulty
eval_difficulty = p.eval_difficulty or task.eval_difficulty
pool = task.generate(p.rl.pool_size, difficulty=train_difficulty, seed=p.problem_seed)
evals = task.generate(p.rl.eval_problems, difficulty=eval_difficulty, seed=p.eval_seed)
print({s: policies[s].params for s in p.sizes if s in policies}, f"pool {len(pool)} ({train_difficulty} steps),",
      f"eval {len(evals)} ({eval_difficulty} steps)")

# %%
t0 = time.perf_counter()
column = f"eval_{p.test_loss}"  # the pass@1 whose complement is the test loss
table, history = runs.size_sweep(policies, p.sizes, p.rl, pool, evals, seed=run.seed, err_floor=p.err_floor,
                                 column=column, progress=run.progress)
seconds = time.perf_counter() - t0
run.save_table(table, "errrate")
run.save_table(history, "rl_history")
table.pivot(index="step", columns="size", values="err").round(3)

# %%
import numpy as np

fits = {x: law.loglinear_fits(table, x) for x in ("C", "D")}
kfits = {x: law.k_of_n_fits(f["N"], f["k"], seed=run.seed) for x, f in fits.items()}
run.save_table(fits["C"].merge(fits["D"], on=["size", "N"], suffixes=("_C", "_D")), "loglinear_fits")
metrics = law.size_metrics(table, fits, kfits, p.sizes)
run.log_metrics(metrics)
run.log_timings({"rl_sizes_seconds": round(seconds, 2)})
metrics

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, x, xlabel in ((axes[0], "C", "RL compute C (FLOPs)"), (axes[1], "D", "samples D")):
    sub = table[table[x] > 0]
    sns.scatterplot(data=sub, x=x, y="err", hue="size", ax=ax, zorder=3)
    for r, color in zip(fits[x].itertuples(), sns.color_palette()):
        g = sub[sub["size"] == r.size]
        grid = np.geomspace(g[x].min(), g[x].max(), 50)
        ax.plot(grid, np.exp(-r.k * np.log(grid) + r.E0), color=color, label=f"{r.size}: k={r.k:.3f}")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=f"held-out ErrRate ({p.test_loss})", title=f"ErrRate vs {x}")
    ax.legend(fontsize=8)
f, kf = fits["C"], kfits["C"]
grid = np.geomspace(f["N"].min() / 2, f["N"].max() * 2, 100)
axes[2].scatter(f["N"], f["k"], color="k", zorder=3, label="per-size fit (X = C)")
axes[2].plot(grid, law.k_of_n(kf["k_max"], kf["N0"], grid), label=f"k_max N/(N+N0): AIC {kf['aic_sat']:.1f}")
axes[2].plot(grid, kf["a_log"] + kf["b_log"] * np.log(grid), ls="--", label=f"a + b ln N: AIC {kf['aic_log']:.1f}")
axes[2].set(xscale="log", xlabel="non-embedding parameters N", ylabel="k(N)", title="learning efficiency vs N")
axes[2].legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig2_rl_scaling")

# %% [markdown]
# ## Data reuse at equal steps (paper Fig. 7)

# %%
if p.reuse_policy not in policies:
    raise ValueError(f"reuse_policy: {p.reuse_policy!r} is not a policy of the reasoning artifact; have {', '.join(policies)}")
cfg = p.rl.model_copy(update={"steps": p.reuse_steps})
reuse_pool = task.generate(cfg.pool_size, difficulty=train_difficulty, seed=p.problem_seed)
reuse_evals = evals[: cfg.eval_problems]
seeds = [run.seed + i for i in range(p.reuse_seeds)]
t0 = time.perf_counter()
curves = runs.reuse_sweep(policies[p.reuse_policy], cfg, p.reuse_taus, seeds, reuse_pool, reuse_evals, column=column,
                          progress=run.progress)
seconds = time.perf_counter() - t0
run.save_table(curves, "reuse_curves")
final = curves.loc[curves.groupby(["tau", "seed"])["step"].idxmax()]
summary = law.reuse_summary(final)
run.save_table(summary, "reuse_summary")
metrics = law.reuse_metrics(curves, p.claim_tau)
run.log_metrics(metrics)
run.log_timings({"reuse_seconds": round(seconds, 2)})
metrics

# %%
fig, ax = plt.subplots(figsize=(6, 4))
sns.lineplot(data=curves.assign(tau=curves["tau"].map(lambda t: f"tau={t:g}")), x="step", y="err", hue="tau",
             marker="o", ax=ax)
ax.set(xlabel="GRPO step", ylabel=f"held-out ErrRate ({p.test_loss})",
       title=f"data reuse, {p.reuse_policy} policy (mean of {p.reuse_seeds} seed(s))")
fig.tight_layout()
run.save_figure(fig, "fig3_data_reuse")
