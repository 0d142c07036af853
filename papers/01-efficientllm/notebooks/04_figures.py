# %% [markdown]
# # 01 · EfficientLLM — figures
# Plots the tables the earlier notebooks of this run saved: the architecture trade-offs
# (KV-cache bytes, decode latency, perplexity), LoRA / RSLoRA / DoRA loss and step time against
# model size, and quantization memory against quality. Computes nothing new.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p01

# %%
from shared import notebook

run = notebook.start("01", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import seaborn as sns

summary = run.load_table("architecture_summary")
latency = run.load_table("latency")
peft = run.load_table("peft")
tiny = run.load_table("quantization_tinylm")
minilm = run.load_table("quantization_minilm")

# %% [markdown]
# Architectures at the longest context: KV-cache bytes per token (bf16) against per-token decode
# latency, colour = validation perplexity (lower is better on every axis); circled: the Pareto
# front of KV bytes x latency. Right: decode latency against context length.

# %%
timed = summary.dropna(subset=["decode_s_per_token"])
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
ax = axes[0]
points = ax.scatter(timed["kv_bytes_per_token_measured"], 1e3 * timed["decode_s_per_token"], c=timed["val_ppl"], cmap="viridis_r", s=70)
front = timed[timed["pareto_kv_latency"].astype(bool)]
ax.scatter(front["kv_bytes_per_token_measured"], 1e3 * front["decode_s_per_token"], s=220, facecolors="none", edgecolors="black")
for row in timed.itertuples():
    ax.annotate(row.variant, (row.kv_bytes_per_token_measured, 1e3 * row.decode_s_per_token), xytext=(5, 4), textcoords="offset points", fontsize=8)
fig.colorbar(points, ax=ax, label="validation perplexity")
ax.set(xscale="log", yscale="log", xlabel="KV cache per token (bytes, bf16, as cached)", ylabel="decode latency per token (ms)",
       title=f"Trade-offs at {int(latency['context'].max())} tokens")
sns.lineplot(data=latency.assign(decode_ms=1e3 * latency["decode_s_per_token"]), x="context", y="decode_ms", hue="variant", marker="o", ax=axes[1])
axes[1].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="decode latency per token (ms)", title=f"Decode latency on {run.device}")
run.save_figure(fig, "fig1_architectures_tradeoffs")

# %% [markdown]
# PEFT: held-out loss after fine-tuning and seconds per step against model size, per method
# (colour) and rank (marker); the dotted line is the loss before fine-tuning.

# %%
runs = peft[peft["method"] != "none"]
base = peft[peft["method"] == "none"].sort_values("params_total")
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
sns.lineplot(data=runs, x="params_total", y="eval_loss", hue="method", style="rank", markers=True, ax=axes[0])
axes[0].plot(base["params_total"], base["eval_loss"], ":", color="gray", label="before fine-tuning")
axes[0].legend(fontsize=7)
axes[0].set(xscale="log", xlabel="model parameters", ylabel="held-out loss (nats/token)", title="Fine-tuning loss vs model size")
sns.lineplot(data=runs.assign(step_ms=1e3 * runs["step_s"]), x="params_total", y="step_ms", hue="method", style="rank", markers=True, ax=axes[1])
axes[1].set(xscale="log", yscale="log", xlabel="model parameters", ylabel="time per step (ms)", title="Step time vs model size")
run.save_figure(fig, "fig2_peft_vs_size")

# %% [markdown]
# Quantization: memory against quality loss relative to bf16. Left and middle: tinylm models
# (relative perplexity increase) against whole-model bytes and against the bytes of the
# decoder's linear layers (what bitsandbytes quantizes; embeddings and norms stay 16-bit);
# right: MiniLM (recall@1 drop in points), both byte counts.

# %%
tiny = tiny.copy()
ref = tiny[tiny["format"] == "bfloat16"].set_index("model")["val_ppl"]
tiny["ppl_increase_pct"] = 100 * (tiny["val_ppl"] / tiny["model"].map(ref) - 1)
mini = minilm.copy()
mini["recall_drop_points"] = 100 * (mini.loc[mini["format"] == "bfloat16", "recall_at_1"].item() - mini["recall_at_1"])
mini = mini.melt(id_vars=["format", "recall_drop_points"], value_vars=["model_bytes_ratio_vs_bf16", "linear_bytes_ratio_vs_bf16"],
                 var_name="bytes of", value_name="ratio")
mini["bytes of"] = mini["bytes of"].map({"model_bytes_ratio_vs_bf16": "whole model", "linear_bytes_ratio_vs_bf16": "linear layers"})
fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
for ax, column, what in ((axes[0], "model_bytes_ratio_vs_bf16", "whole model"), (axes[1], "linear_bytes_ratio_vs_bf16", "linear layers")):
    sns.scatterplot(data=tiny, x=column, y="ppl_increase_pct", hue="format", style="model", s=80, ax=ax)
    ax.set(xscale="log", xlabel=f"bytes / bf16 bytes ({what})", ylabel="perplexity increase vs bf16 (%)", title=f"tinylm: {what}")
sns.scatterplot(data=mini, x="ratio", y="recall_drop_points", hue="format", style="bytes of", s=80, ax=axes[2])
axes[2].set(xscale="log", xlabel="bytes / bf16 bytes", ylabel="recall@1 drop vs bf16 (points)", title="all-MiniLM-L6-v2: code search")
for ax in axes:
    ax.axhline(0, color="gray", lw=0.8)
    ax.legend(fontsize=7)
run.save_figure(fig, "fig3_quantization_memory_vs_quality")
