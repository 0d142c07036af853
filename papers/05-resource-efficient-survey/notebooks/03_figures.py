# %% [markdown]
# # 05 · Resource-efficient LLMs (survey) — figures
# Plots the tables the earlier notebooks of this run saved: recall@1 of every technique
# against its storage bytes and against its latency, with the Pareto front over (bytes,
# latency, -recall@1) marked; dense vs CSR storage across sparsities; the distillation curve.
# Computes nothing new.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p05

# %%
from shared import notebook

run = notebook.start("05", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import seaborn as sns

techniques = run.load_table("techniques")
sweep = run.load_table("csr_sweep")
history = run.load_table("distill")
order = list(techniques["technique"])
colors = dict(zip(order, sns.color_palette(n_colors=len(order))))
techniques["MB"] = techniques["model_bytes"] / 1e6
techniques["latency_ms"] = 1e3 * techniques["latency_median_s"]
techniques["on the Pareto front"] = techniques["pareto"].map({True: "yes", False: "no"})

# %% [markdown]
# Recall@1 against storage and against latency. Filled markers: on the Pareto front over all
# three objectives (bytes, latency, recall@1), so a point can be on it through the axis not
# drawn. The dashed line joins, in each panel, the points no other point beats on both of its axes.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for ax, x, label in zip(axes, ["MB", "latency_ms"], ["model storage (MB, real bytes)", f"latency of one batch of {p.latency_batch_size} (ms, median)"]):
    sns.scatterplot(data=techniques, x=x, y="recall_at_1", hue="technique", palette=colors, style="on the Pareto front",
                    markers={"yes": "o", "no": "X"}, s=120, ax=ax, legend=ax is axes[0])  # fmt: skip
    front = techniques.sort_values([x, "recall_at_1"], ascending=[True, False])
    best, keep = -1.0, []
    for row in front.itertuples():  # 2-D front of this panel: each point beats every cheaper one's recall
        if row.recall_at_1 > best:
            keep.append(row.Index)
            best = row.recall_at_1
    ax.plot(front.loc[keep, x], front.loc[keep, "recall_at_1"], "--", color="gray", lw=1, zorder=0)
    for row in techniques.itertuples():
        ax.annotate(row.technique, (getattr(row, x), row.recall_at_1), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.margins(x=0.15, y=0.1)  # room for the labels
    ax.set(xlabel=label, ylabel=f"recall@1 (pool of {p.pool_size})")
handles, labels = axes[0].get_legend_handles_labels()
axes[0].get_legend().remove()
fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=7, frameon=False)
devices = ", ".join(f"{t}: {d}" for t, d in zip(techniques["technique"], techniques["device"]) if d != techniques["device"].iloc[0])
fig.suptitle(f"MiniLM code search: quality vs resources ({techniques['device'].iloc[0]}" + (f"; {devices}" if devices else "") + ")")
run.save_figure(fig, "fig1_recall_vs_bytes_and_latency")

# %% [markdown]
# Storage of the encoder's Linear weights as CSR matrices, relative to dense float32, across
# sparsities: with torch's int64 indices every stored non-zero costs 12 bytes instead of 4,
# so CSR saves space only above ~2/3 sparsity (int32 indices: above 1/2).

# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(sweep["sparsity"], sweep["csr_int64_ratio"], "o-", label="CSR, int64 indices (torch default)")
ax.plot(sweep["sparsity"], sweep["csr_int32_ratio"], "s-", label="CSR, int32 indices")
ax.axhline(1.0, color="black", lw=1, label="dense (any sparsity)")
ax.axvline(p.prune_amount, color="gray", ls=":", lw=1, label=f"pruned model ({p.prune_amount:.0%})")
ax.set(xlabel="sparsity (fraction of zero weights)", ylabel="bytes / dense bytes", title="Sparse storage pays only at high sparsity")
ax.legend(fontsize=7)
run.save_figure(fig, "fig2_csr_vs_dense_storage")

# %% [markdown]
# The student's distillation: loss and cosine to the teacher's embeddings per step.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
if len(history):
    axes[0].plot(history["step"], history["loss"])
    axes[1].plot(history["step"], history["cosine"])
axes[0].set(xlabel="step", ylabel="loss (MSE + 1 - cosine)", title="distillation loss")
axes[1].set(xlabel="step", ylabel="cosine to the teacher", title="training-batch cosine")
run.save_figure(fig, "fig3_distillation")
