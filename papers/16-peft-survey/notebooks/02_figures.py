# %% [markdown]
# # 16 · PEFT survey — figures
# Plots the per-method table the benchmark notebook saved: test accuracy against the share
# of trainable parameters, and the cost side — training-step time, memory growth while
# training, and inference latency before and after merging. Computes nothing new.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p16

# %%
from shared import notebook

run = notebook.start("16", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from paper16.methods import GROUPS

table = run.load_table("methods")
ok = table[table["status"] == "ok"].copy()
groups = [g for g in GROUPS if g in set(ok["group"])]
colors = dict(zip(GROUPS, sns.color_palette(n_colors=len(GROUPS))))
order = ok.sort_values(["group", "trainable_pct"], key=lambda c: c.map(GROUPS.index) if c.name == "group" else c)["method"].tolist()
skipped = table[table["status"] != "ok"]
if len(skipped):
    print("not run:", "; ".join(f"{r.method}: {r.note}" for r in skipped.itertuples()))

# %% [markdown]
# Accuracy against the share of the model's parameters a method trains (log scale; the
# head, trained by every method, included). Dashed: full fine-tuning.

# %%
fig, ax = plt.subplots(figsize=(8, 4.8))
sns.scatterplot(data=ok, x="trainable_pct", y="accuracy", hue="group", hue_order=groups, palette=colors, s=60, ax=ax)
ax.set_xscale("log")
ax.autoscale_view()
placed = []  # label anchors in display pixels: a label that would overprint another moves up
for row in ok.sort_values(["accuracy", "method"]).itertuples():
    x, y = ax.transData.transform((row.trainable_pct, row.accuracy))
    lift = 0
    while any(abs(x - px) < 45 and abs(y + lift - py) < 9 for px, py in placed):
        lift += 9
    placed.append((x, y + lift))
    ax.annotate(row.method, (row.trainable_pct, row.accuracy), xytext=(4, 3 + lift * 72 / fig.dpi), textcoords="offset points", fontsize=7)
if "full" in set(ok["method"]):
    ax.axhline(ok.loc[ok["method"] == "full", "accuracy"].item(), color="gray", ls="--", lw=1)
ax.set(xscale="log", xlabel="trainable parameters (% of MiniLM's, head included)", ylabel="test accuracy (%)",
       title=f"Accuracy vs trainable share ({run.scale}: {p.epochs} epoch(s), {p.n_classes} packages)")  # fmt: skip
ax.legend(title="family", loc="best", fontsize=7)
run.save_figure(fig, "fig1_accuracy_vs_trainable")

# %% [markdown]
# What a method costs: median training-step time, the growth of memory from before the model
# was built to the peak while it trained (RSS on CPU, allocated bytes on CUDA), and the
# latency of one inference batch relative to the untouched base model, as trained
# (unmerged) and after `merge_and_unload` (methods whose update cannot be merged have no
# second bar).

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 0.32 * len(order) + 1.6), sharey=True, layout="constrained")
palette = {row.method: colors[row.group] for row in ok.itertuples()}
sns.barplot(data=ok, y="method", x="step_median_ms", order=order, palette=palette, hue="method", legend=False, ax=axes[0])
axes[0].set(xlabel="median training step (ms)", ylabel="", title="training step time")
sns.barplot(data=ok, y="method", x="peak_mem_growth_mb", order=order, palette=palette, hue="method", legend=False, ax=axes[1])
axes[1].set(xlabel="peak memory growth while training (MiB)", ylabel="", title="training memory")
latency = ok.melt(id_vars="method", value_vars=["latency_unmerged_ratio", "latency_merged_ratio"], var_name="form", value_name="ratio")
latency["form"] = latency["form"].map({"latency_unmerged_ratio": "unmerged", "latency_merged_ratio": "merged"})
sns.barplot(data=latency.dropna(), y="method", x="ratio", hue="form", order=order, ax=axes[2])
axes[2].axvline(1.0, color="gray", ls="--", lw=1)
axes[2].set(xlabel="inference latency / base model", ylabel="", title="inference latency")
handles = [plt.Rectangle((0, 0), 1, 1, color=colors[g]) for g in groups]
fig.legend(handles, groups, title="family", loc="outside lower center", ncol=len(groups), fontsize=7)
fig.suptitle(f"Cost per method on {run.device} (batch {p.batch_size}; latency: batch {p.latency_batch_size} x {p.latency_seq_len} tokens)")
run.save_figure(fig, "fig2_cost_per_method")
