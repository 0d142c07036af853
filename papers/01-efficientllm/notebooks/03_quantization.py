# %% [markdown]
# # 01 · EfficientLLM — inference: bit-width quantization
# The dense tinylm models and the real pretrained all-MiniLM-L6-v2 in float32, bf16, fp16 and
# bitsandbytes int8 / int4 (NF4, FP4), loaded by transformers from the saved weights with a
# BitsAndBytesConfig (bitsandbytes 0.50 runs on the CPU). True memory from the tensors' storage
# (packed weights + quantization state), quality (tinylm: validation perplexity; MiniLM: zero-shot
# code search recall@1 over standard-library functions, and cosine fidelity of the embeddings),
# decode latency and energy per token, and EfficientLLM's MCR (Eq. 9) against bf16. Feeds the
# int4-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"quant_formats": ["bfloat16", "nf4"]}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p01

# %%
from shared import notebook

run = notebook.start("01", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper01 import architectures, quantize
from shared import corpus
from shared.timing import pinned_threads

corpus_dir, tinylm_dir = run.artifact("corpus"), run.artifact("tinylm")
folders = architectures.model_dirs(tinylm_dir, p.quant_models)
seq_len = p.eval_seq_len or min(architectures.load_spec(f).max_seq_len for f in folders.values())
val = corpus.eval_batches(corpus.load_tokens(corpus_dir, "val"), p.eval_batch_size, seq_len, p.quant_eval_batches, device=run.device)

# %% [markdown]
# tinylm dense models: bytes, perplexity, decode latency and energy per token, MCR.

# %%
with pinned_threads(p.num_threads if run.device == "cpu" else None):
    tiny = quantize.tinylm_table(
        folders, p.quant_formats, val, device=run.device, context=p.quant_context, decode_tokens=p.quant_decode_tokens,
        repeats=p.quant_repeats, num_threads=p.num_threads, interval_s=p.memory_interval_s, seed=run.seed, progress=run.progress,
    )
run.save_table(tiny, "quantization_tinylm")
tiny[["model", "format", "model_bytes", "linear_bytes_ratio_vs_bf16", "model_bytes_ratio_vs_bf16", "val_ppl", "mcr_vs_bf16",
      "decode_s_per_token", "decode_energy_j_per_token"]]

# %% [markdown]
# MiniLM (real pretrained weights): zero-shot code search. Query: a function's first docstring
# sentence; document: its code without the docstring; recall@1 among all pairs.

# %%
pairs = quantize.code_search_pairs(corpus.load_docstrings(corpus_dir), p.minilm_pairs, seed=run.seed)
minilm = quantize.minilm_table(
    pairs, p.quant_formats, device=run.device, max_length=p.minilm_max_length, batch_size=p.minilm_batch_size,
    num_threads=p.num_threads, progress=run.progress,
)
run.save_table(minilm, "quantization_minilm")
minilm.drop(columns=["energy_source"])

# %%
metrics, timings = quantize.claim_metrics(tiny, minilm)
run.log_metrics({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()})
run.log_timings({k: round(v, 6) if isinstance(v, float) else v for k, v in timings.items()})
print("energy:", tiny["energy_source"].iloc[0])
{k: v for k, v in {**metrics, **timings}.items() if k.startswith(("int4", "minilm_int4"))}
