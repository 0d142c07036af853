# %% [markdown]
# # 01 · EfficientLLM — architectures: attention variants and MoE
# The tinylm artifact trained MHA, GQA, MQA, MLA, NSA and a fine-grained MoE on the same
# corpus tokens in the same order. Here every variant is measured the way EfficientLLM measures
# architectures: parameters and weight bytes, KV-cache bytes per token (the paper's layout and
# what transformers really caches), validation perplexity, analytic FLOPs per token, prefill
# and per-token decode latency at long contexts (random prompts: latency needs no quality),
# memory during prefill (peak and time-averaged, AMU), compute utilisation (PCU) against the
# measured peak of this device, and energy per decoded token (NVML on a GPU, a labelled
# estimate on a CPU without RAPL). Feeds the kv-cache-*, mqa-*, mla-*, moe-* and
# no-variant-best-on-all claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"latency_contexts": [1024]}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p01

# %%
from shared import notebook

run = notebook.start("01", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd

from paper01 import architectures
from shared import corpus
from shared.timing import pinned_threads

corpus_dir, tinylm_dir = run.artifact("corpus"), run.artifact("tinylm")
names = list(dict.fromkeys([*p.attention_variants, p.moe_model, p.moe_dense_equal_active, *p.latency_variants]))
folders = architectures.model_dirs(tinylm_dir, names)
specs = {name: architectures.load_spec(folder) for name, folder in folders.items()}
architectures.check_roles(specs, p.attention_variants, p.latency_variants, p.baseline, p.moe_model, p.moe_dense_equal_active)
seq_len = p.eval_seq_len or min(spec.max_seq_len for spec in specs.values())
val = corpus.eval_batches(corpus.load_tokens(corpus_dir, "val"), p.eval_batch_size, seq_len, p.eval_batches, device=run.device)
print(f"{len(folders)} models, validation: {p.eval_batches} x {p.eval_batch_size} windows of {seq_len} tokens")

# %% [markdown]
# Sizes, KV cache, perplexity and FLOPs of every model (deterministic).

# %%
table_models = {name: folders[name] for name in dict.fromkeys([*p.attention_variants, p.moe_model, p.moe_dense_equal_active])}
with pinned_threads(p.num_threads if run.device == "cpu" else None):
    static = architectures.static_table(
        table_models, val, device=run.device, dtype=p.inference_dtype, kv_bytes_per_value=p.kv_bytes_per_value,
        context_len=seq_len, progress=run.progress,
    )
run.save_table(static, "architectures")
static[["variant", "attention", "ffn", "params_total", "params_active", "weight_bytes", "kv_bytes_per_token_paper",
        "kv_bytes_per_token_measured", "val_ppl", "flops_per_token"]]

# %% [markdown]
# Latency, memory, energy and utilisation at long contexts: one prefill per model and context,
# then rounds of decoding interleaved over the models (the cache is cropped back to the prompt
# after each round).

# %%
models = architectures.load_models({name: folders[name] for name in p.latency_variants}, run.device, p.inference_dtype)
latency = architectures.latency_table(
    models, p.latency_contexts, decode_tokens=p.decode_tokens, repeats=p.latency_repeats, warmup=p.latency_warmup,
    device=run.device, dtype=p.inference_dtype, num_threads=p.num_threads, interval_s=p.memory_interval_s, seed=run.seed,
    progress=run.progress,
)
del models
run.save_table(latency, "latency")
latency[["variant", "context", "prefill_s", "decode_s_per_token", "decode_state_bytes", "prefill_peak_growth_bytes", "decode_energy_j_per_token", "pcu_prefill"]]

# %% [markdown]
# The claims: KV ratios against the definitions, rankings, MoE against the dense models, and
# the trade-off table at the longest context (Pareto front of KV bytes x decode latency).

# %%
metrics, timings, summary = architectures.claim_metrics(
    static, latency, attention_variants=p.attention_variants, baseline=p.baseline, moe_model=p.moe_model,
    moe_dense_equal_active=p.moe_dense_equal_active, moe_spec=specs[p.moe_model], context_len=seq_len,
)
run.save_table(summary, "architecture_summary")
run.log_metrics({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()})
run.log_timings({k: round(v, 6) if isinstance(v, float) else v for k, v in timings.items()})
print("energy:", latency["energy_source"].iloc[0])
print("peak:", latency["peak_source"].iloc[0])
pd.Series({k: v for k, v in {**metrics, **timings}.items() if not k.startswith(("val_ppl_", "decode_ms_", "prefill_s_"))})

# %%
summary[["variant", "val_ppl", "kv_bytes_per_token_measured", "decode_s_per_token", "params_total", "kv_x_decode", "pareto_kv_latency"]]
