# %% [markdown]
# # 32 · Fast and Accurate Model Scaling — figures
# Plots the tables the earlier notebooks of this run saved: complexity of every strategy
# against s (log-log) and the fitted exponents, runtime against flops and against
# activations, and accuracy per strategy. Computes nothing new.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p32

# %%
from shared import notebook

run = notebook.start("32", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

complexity = run.load_table("complexity")
exponents = run.load_table("exponents")
runtime = run.load_table("runtime")
accuracy = run.load_table("accuracy")
order = list(dict.fromkeys(complexity["strategy"]))  # strategies in config order
colors = dict(zip(order, sns.color_palette(n_colors=len(order))))

# %% [markdown]
# Flops, parameters and activations of each strategy's networks against s, relative to the
# base network (log-log). Every strategy scales flops by s; they differ in params and,
# what matters for runtime, activations.

# %%
measures = [("flops", "flops (multiply-adds)"), ("params", "parameters"), ("activations", "activations")]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True, layout="constrained")
for ax, (measure, label) in zip(axes, measures):
    for strategy in order:
        rows = complexity[complexity["strategy"] == strategy]
        exponent = exponents.query("strategy == @strategy and measure == @measure")["exponent"].item()
        ax.plot(rows["s"], rows[measure] / rows[measure].iloc[0], "o-", color=colors[strategy], label=f"{strategy} (s^{exponent:.2f})")
    ax.set(xscale="log", yscale="log", xlabel="flops multiple s", ylabel=f"{label} / base", title=label)
    ax.legend(fontsize=6, ncol=2)
fig.suptitle("Complexity of scaled networks (exact counts, per image)")
run.save_figure(fig, "fig1_complexity_vs_s")

# %% [markdown]
# Fitted exponents (bars) and the complexity model's values (black ticks). The paper's point:
# dWr keeps the activation exponent near 0.6 (w alone: 0.5), against 5/6 for dwr and 1 for d or r.

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
sns.barplot(data=exponents, x="strategy", y="exponent", hue="measure", order=order, ax=ax)
positions = {m: i for i, m in enumerate(["flops", "params", "activations"])}
width = 0.8 / 3
for row in exponents.itertuples():
    x = order.index(row.strategy) + (positions[row.measure] - 1) * width
    ax.plot([x - width / 2, x + width / 2], [row.ideal, row.ideal], color="black", lw=1.5)
ax.legend(title="measure", loc="upper left", bbox_to_anchor=(1.0, 1.0))
ax.set(ylabel="exponent of s (fitted)", title="Exponents of flops, params and activations (black: complexity model)")
run.save_figure(fig, "fig2_exponents")

# %% [markdown]
# Runtime of every timed network against its flops and against its activations (log-log),
# for the forward pass and the training step; r is the Pearson correlation of the logs.

# %%
fig, axes = plt.subplots(2, 2, figsize=(9, 7), layout="constrained")
for row_axes, kind in zip(axes, ["forward", "train"]):
    for ax, measure in zip(row_axes, ["flops", "activations"]):
        for strategy in dict.fromkeys(runtime["strategy"]):
            rows = runtime[runtime["strategy"] == strategy]
            ax.scatter(rows[measure], 1e3 * rows[f"{kind}_median_s"], color=colors[strategy], label=strategy, s=25)
        r = np.corrcoef(np.log(runtime[measure].astype(float)), np.log(runtime[f"{kind}_median_s"]))[0, 1]
        ax.set(xscale="log", yscale="log", xlabel=f"{measure} per image", ylabel=f"{kind} time (ms)", title=f"{kind}: r(log time, log {measure}) = {r:.3f}")
axes[0, 0].legend(fontsize=7)
fig.suptitle(f"Runtime on {run.device} (batch {p.runtime_batch_size}, {p.runtime_dtype}, median of {p.runtime_repeats})")
run.save_figure(fig, "fig3_runtime_vs_flops_and_activations")

# %% [markdown]
# Test accuracy on noisy digits of each strategy's network at the same flops (points: seeds,
# bars: mean), next to the base network.

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
acc_order = list(dict.fromkeys(accuracy["strategy"]))
sns.barplot(data=accuracy, x="strategy", y="accuracy", order=acc_order, color="lightgray", errorbar=None, ax=ax)
sns.stripplot(data=accuracy, x="strategy", y="accuracy", order=acc_order, color="black", size=4, ax=ax)
low = accuracy["accuracy"].min()
ax.set(ylim=(max(0.0, low - 5), min(100.0, accuracy["accuracy"].max() + 3)), ylabel="test accuracy (%)",
       title=f"Accuracy at {p.acc_scale_factor:g}x the base flops (digits + noise {p.acc_noise_std})")
run.save_figure(fig, "fig4_accuracy_by_strategy")
