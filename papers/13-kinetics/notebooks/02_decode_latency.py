# %% [markdown]
# # 13 · Kinetics — measured per-token decode latency: dense vs block top-k attention
# A random-init decoder (GQA, SwiGLU; `paper13.decode`) decodes against a real preallocated KV cache
# holding `decode_contexts` tokens. Dense attention reads the whole cache every token; block top-k
# scores one mean key per block of 32 tokens, then reads 16 blocks (+ the current one). Latency is
# wall-clock on this machine (timings.json), interleaved, median of repeats.
# Feeds the claims cpu-dense-decode-linear and cpu-blocktopk-faster.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"decode_repeats": 9}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p13

# %%
from shared import notebook

run = notebook.start("13", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper13 import decode

torch.set_num_threads(p.num_threads)
model = decode.Decoder(p.decode_layers, p.decode_d_model, p.decode_heads, p.decode_kv_heads, p.decode_d_ff, seed=run.seed)
model = model.to(device=run.device, dtype=getattr(torch, p.decode_dtype)).eval()
table = decode.latency_table(
    model, p.decode_contexts, block=p.decode_block, topk=p.decode_topk, steps=p.decode_steps,
    repeats=p.decode_repeats, warmup=p.decode_warmup, seed=run.seed, device=run.device, progress=run.progress,
)  # fmt: skip
run.save_table(table, "decode_latency")
dense = table[table["kind"] == "dense"].sort_values("context")
topk = table[table["kind"] == "topk"].sort_values("context")
fit = decode.linear_fit(dense["context"], dense["s_per_token"])
longest = max(p.decode_contexts)
ratio = float(topk["s_per_token"].iloc[-1] / dense["s_per_token"].iloc[-1])
run.log_timings({
    "decode_dense_r2": fit["r2"],
    "decode_dense_us_per_1k_context": fit["slope"] * 1e9,
    "decode_topk_over_dense": ratio,
    "decode_dense_ms_longest": float(dense["s_per_token"].iloc[-1] * 1e3),
    "decode_topk_ms_longest": float(topk["s_per_token"].iloc[-1] * 1e3),
    "decode_device": run.device,
})  # fmt: skip
table.assign(ms_per_token=table["s_per_token"] * 1e3).round(4)

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 4))
for kind, g in table.groupby("kind"):
    g = g.sort_values("context")
    ax.errorbar(g["context"], g["s_per_token"] * 1e3, yerr=[(g["s_per_token"] - g["q25_s"]) * 1e3, (g["q75_s"] - g["s_per_token"]) * 1e3],
                fmt="o-", capsize=3, label=kind if kind == "dense" else f"block top-k ({p.decode_topk} x {p.decode_block})")
xs = dense["context"]
ax.plot(xs, (fit["intercept"] + fit["slope"] * xs) * 1e3, "k:", lw=1, label=f"linear fit, R² = {fit['r2']:.3f}")
ax.set(xlabel="context (tokens in the KV cache)", ylabel="ms per generated token",
       title=f"{p.decode_layers}-layer decoder, d={p.decode_d_model}, {p.decode_heads}q/{p.decode_kv_heads}kv ({run.device})")
ax.legend()
fig.tight_layout()
run.save_figure(fig, "fig3_decode_latency")
