# %% [markdown]
# # 18 · Parallel Scaling Law — batch-1 memory and latency against parameter scaling
# For a base model and each P, the law (k from the published refit) says a wider model with
# N (1 + k ln P) non-embedding parameters reaches the P-stream model's loss. We build both
# (random init: cost does not depend on the weights) and measure, at batch 1, the memory of
# weights + KV cache (exact bytes of the real tensors) and the generation latency
# (shared.metrics). The paper's 22x / 6x are llm-analysis estimates on an A100 for a 1.6B model
# at P = 8; our CPU numbers are what a CPU does with a small model, and are reported as such.
# Feeds the claims memory-increase-vs-param and latency-increase-vs-param.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"cost_new_tokens": 32}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p18

# %%
from shared import notebook

run = notebook.start("18", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper18 import cost

torch.set_num_threads(p.num_threads)
fits = run.load_table("published_fits")
k = float(fits[(fits["dataset"] == p.cost_k_source) & (fits["fit"] == "all points")]["k"].iloc[0])
table = cost.cost_table(
    p.cost_model, p.cost_streams, p.cost_prefix_len, k, prompt_len=p.cost_prompt_len, new_tokens=p.cost_new_tokens,
    repeats=p.cost_repeats, warmup=p.cost_warmup, device=run.device, dtype=p.cost_dtype, seed=run.seed,
    progress=run.progress,
)  # fmt: skip
run.save_table(table, "cost_models")
inc = cost.increases(table)
run.save_table(inc, "cost_increases")
table

# %%
at = inc[inc["P"] == p.cost_claim_streams].iloc[0]
run.log_metrics({
    "cost_k": round(k, 4),
    "cost_memory_increase_ratio": round(float(at["memory_bytes_ratio"]), 4),
    "cost_memory_increase_parscale_rel": round(float(at["memory_increase_parscale_rel"]), 4),
    "cost_memory_increase_param_rel": round(float(at["memory_increase_param_rel"]), 4),
    "cost_param_scaled_params_ratio": round(float(
        table[(table["kind"] == "param-scaled") & (table["P"] == p.cost_claim_streams)]["nonembedding_params"].iloc[0]
        / table[table["kind"] == "base"]["nonembedding_params"].iloc[0]), 4),
})  # fmt: skip
# the measured peak growth (RSS on a CPU) stays in results/cost_increases.csv: on a CPU it is
# mostly allocator noise (the weights are resident before the generation starts)
timings = {
    "cost_latency_increase_ratio": float(at["total_s_ratio"]),  # NaN when ParScale's increase is within noise (<= 0)
    "cost_decode_increase_ratio": float(at["decode_s_per_token_ratio"]),
    "cost_latency_increase_parscale_s": float(at["total_s_increase_parscale"]),
    "cost_latency_increase_param_s": float(at["total_s_increase_param"]),
}
run.log_timings(cost.ledger_timings(timings) | {"cost_device": run.device})  # a NaN ratio: None, with a warning
inc.T

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, col, unit, scale_by in ((axes[0], "memory_bytes", "MiB", 2**20), (axes[1], "total_s", "s", 1.0)):
    for kind, marker in (("parscale", "o-"), ("param-scaled", "s--")):
        g = inc
        ax.plot(g["P"], g[f"{col}_increase_{'parscale' if kind == 'parscale' else 'param'}"] / scale_by, marker, label=kind)
    ax.set(xscale="log", xlabel="P (parameter-scaled: the equal-loss wider model)", ylabel=f"increase over P=1 ({unit})",
           title=("memory: weights + KV cache" if col == "memory_bytes" else f"latency: {p.cost_prompt_len} in, {p.cost_new_tokens} out")
           + f" ({run.device})")
    ax.set_xticks(list(g["P"]), [str(v) for v in g["P"]])
    ax.legend()
fig.tight_layout()
run.save_figure(fig, "fig3_inference_cost")
