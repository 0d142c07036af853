# %% [markdown]
# # 30 · MoS — figures
# Plots the tables the training notebook saved: accuracy against adapter parameters (the LoRA
# curve over its ranks, pure sharing and MoS at the budget of LoRA r = 2), and the accuracy MoS
# loses when each differentiation strategy is removed. Computes nothing new.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p30

# %%
from shared import notebook

run = notebook.start("30", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import seaborn as sns

runs = run.load_table("runs")
summary = run.load_table("summary").set_index("method")
lora = summary[summary["kind"] == "lora"].sort_values("adapter_params")
shared_kinds = summary[summary["kind"] == "mos"]

# %% [markdown]
# Accuracy (mean over seeds, bars: one standard deviation) against the adapter's trainable
# parameters (the head, the same in every method, left out). MoS and its ablations all sit at
# the budget of LoRA r = 2 by construction (drawn slightly apart so they stay readable); the
# dotted line is MoS's accuracy.

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.errorbar(lora["adapter_params"], lora["accuracy"], yerr=lora["accuracy_std"].fillna(0), marker="o", capsize=3, zorder=3,
            label="LoRA (r = 1 ... 16)")  # fmt: skip
if "mos" in summary.index:
    ax.axhline(summary.loc["mos", "accuracy"], color="gray", ls=":", lw=1)  # read off the LoRA rank MoS matches
for name, row in lora.iterrows():
    ax.annotate(f"r={int(row['r'])}", (row["adapter_params"], row["accuracy"]), xytext=(4, -10), textcoords="offset points", fontsize=7)
markers = {"mos": ("*", 14), "pure_sharing": ("X", 9)}
for i, (name, row) in enumerate(shared_kinds.iterrows()):  # all at budget B: spread sideways to stay readable
    marker, size = markers.get(name, (".", 8))
    ax.errorbar(row["adapter_params"] * 1.035**i, row["accuracy"], yerr=0 if row["accuracy_std"] != row["accuracy_std"] else row["accuracy_std"],
                marker=marker, markersize=size, capsize=3, ls="none", label=name)  # fmt: skip
ax.set(xscale="log", xlabel="trainable adapter parameters", ylabel="test accuracy (%)",
       title=f"Accuracy vs parameters ({run.scale}: {p.n_classes} packages, {p.train_per_class} rows/class, {len(p.seeds)} seed(s))")  # fmt: skip
ax.legend(fontsize=7, loc="best")
run.save_figure(fig, "fig1_accuracy_vs_params")

# %% [markdown]
# The ablation: MoS with every strategy, without each one, and pure sharing (all off); one dot
# per seed, the bar the mean.

# %%
order = [m for m in ["mos", "mos_no_subset", "mos_no_dissociation", "mos_no_sharding", "mos_no_privatization", "pure_sharing"] if m in summary.index]
fig, ax = plt.subplots(figsize=(7, 3.6))
sub = runs[runs["method"].isin(order)]
sns.barplot(data=sub, y="method", x="accuracy", order=order, errorbar=None, color=sns.color_palette()[0], alpha=0.6, ax=ax)
sns.stripplot(data=sub, y="method", x="accuracy", order=order, color="black", size=4, ax=ax)
lo = sub["accuracy"].min()
ax.set(xlim=(max(0, lo - 10), min(100, sub["accuracy"].max() + 5)), xlabel="test accuracy (%)", ylabel="",
       title="MoS ablation: each differentiation strategy removed (budget of LoRA r = 2)")  # fmt: skip
run.save_figure(fig, "fig2_ablation")
