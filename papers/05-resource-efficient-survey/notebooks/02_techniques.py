# %% [markdown]
# # 05 · Resource-efficient LLMs (survey) — three compressions of MiniLM, every metric family
# Applies the survey's model-compression techniques (§6.1: pruning, quantization, knowledge
# distillation) to the real pretrained all-MiniLM-L6-v2 and measures each with the same code
# (`shared.metrics`, `shared.timing`) on a real task: zero-shot code search on the Python
# standard library — the query is a function's docstring summary, the candidates are the code
# of every function in a pool of `pool_size`, ranked by the cosine of mean-pooled embeddings.
#
# Techniques: int8 weights (torch's dynamic int8 Linear; bitsandbytes LLM.int8), 50 %
# unstructured magnitude pruning, and a 2-layer student initialised from teacher layers and
# distilled on corpus text of other modules. One table row per model: parameters, real
# storage bytes, compression ratio, peak and average memory while embedding the pool,
# latency of one fixed batch (all models interleaved), throughput, FLOPs (counted and
# analytic), energy per 1k sentences (with its source), recall@1 and MRR, fidelity to the
# teacher, and the Pareto flag over (bytes, latency, -recall@1). Feeds every claim but
# allreduce-volume.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"pool_size": 500}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p05

# %%
from shared import notebook

run = notebook.start("05", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import numpy as np
import pandas as pd
import torch

from paper05 import resource_eval
from shared import corpus, metrics, timing, zoo

torch.set_num_threads(p.num_threads)  # for everything below, timings included
dtype = resource_eval.DTYPES[p.dtype]

docstrings = corpus.load_docstrings(run.artifact("corpus"))
pool, rest = resource_eval.retrieval_split(docstrings, p.pool_size, run.seed)
texts = pd.concat([rest["summary"], rest["code"]]).tolist()
distill_texts = [texts[i] for i in np.random.default_rng(run.seed).permutation(len(texts))[: p.distill_texts]]
print(f"pool: {len(pool)} pairs from {pool['module'].nunique()} modules; distillation: {len(distill_texts)} texts "
      f"from {rest['module'].nunique()} other modules")  # fmt: skip
pool[["module", "qualname", "summary"]].head()

# %% [markdown]
# The models. The int8 ones are built from the fp32 teacher; the float ones use the run's
# dtype on the run's device. torch's dynamic int8 Linear has CPU kernels only, so that model
# runs on the CPU at every scale (its row says so).

# %%
teacher, tokenizer = zoo.minilm(device="cpu")
resource_eval.drop_pooler(teacher)
models = {
    "int8-dynamic": resource_eval.quantize_int8_dynamic(teacher, p.int8_dynamic_qscheme),
    "int8-bnb": resource_eval.quantize_int8_bnb(teacher, run.device, p.bnb_threshold),
    "pruned": resource_eval.prune_magnitude(teacher, p.prune_amount).to(run.device, dtype),
}
student = resource_eval.make_student(teacher, p.student_layers)
models = {"baseline": teacher.to(run.device, dtype), **models}
devices = {name: "cpu" if name == "int8-dynamic" else run.device for name in [*models, "student"]}

# %% [markdown]
# Distillation: the student (teacher layers `student_layers`, the teacher's embeddings)
# learns to reproduce the teacher's mean-pooled embedding of each corpus text (MSE + cosine).
# Its pool embedding before distillation is kept, to show what the training added.

# %%
embed_args = dict(batch_size=p.embed_batch_size, max_len=p.max_seq_len, progress=run.progress)
student_init = resource_eval.embed_pool(student.to(run.device, dtype), tokenizer, pool, device=run.device, name="student (init)", **embed_args)
targets = resource_eval.embed(models["baseline"], tokenizer, distill_texts, batch_size=p.embed_batch_size,
                              max_len=p.distill_max_seq_len, device=run.device, normalize=False,
                              progress=run.progress, desc="teacher targets")  # fmt: skip
settings = resource_eval.DistillConfig(
    steps=p.distill_steps, batch_size=p.distill_batch_size, max_len=p.distill_max_seq_len, lr=p.distill_lr,
    warmup_fraction=p.distill_warmup_fraction, cosine_weight=p.distill_cosine_weight,
    freeze_embeddings=p.distill_freeze_embeddings,
)  # fmt: skip
start = time.perf_counter()
history = resource_eval.distill(student, targets, distill_texts, tokenizer, settings, device=run.device, seed=run.seed, progress=run.progress)
distill_seconds = time.perf_counter() - start
models["student"] = student.to(run.device, dtype)
run.save_table(history, "distill")
history.iloc[[0, len(history) // 2, -1]] if len(history) else history

# %% [markdown]
# Every model embeds the whole pool (queries and code) under one memory sampler and one
# energy meter: retrieval quality, fidelity to the baseline, throughput, memory and energy.

# %%
embedded = {
    name: resource_eval.embed_pool(model, tokenizer, pool, device=devices[name], name=name, **embed_args)
    for name, model in models.items()
}
{name: resource_eval.retrieval_scores(e.queries, e.codes) for name, e in embedded.items()}

# %% [markdown]
# Latency: one fixed batch of `latency_batch_size` code texts padded to `max_seq_len`, the
# same for every model, timed round-robin after warm-up (models on one device together).
# FLOPs of that batch: torch's FlopCounterMode (attention run as explicit matmuls for the
# count: the counter does not see the CPU's fused SDPA kernel) against the analytic count.

# %%
latency_texts = pool["code"].tolist()[: p.latency_batch_size]
batches = {name: resource_eval.tokenize(tokenizer, latency_texts, p.max_seq_len, devices[name], pad_to_max=True) for name in models}
batch_size, seq_len = batches["baseline"]["input_ids"].shape
latency = {}
for device in sorted(set(devices.values())):
    names = [n for n in models if devices[n] == device]
    with torch.inference_mode():
        latency |= timing.benchmark(
            {n: (lambda n=n: resource_eval.forward_embed(models[n], batches[n])) for n in names},
            repeats=p.latency_repeats, warmup=p.latency_warmup, num_threads=p.num_threads, device=device,
        )  # fmt: skip
flops = {name: resource_eval.counted_flops(model, batches[name]) for name, model in models.items()}
flops_analytic = {name: resource_eval.analytic_flops(model, batch_size, seq_len) for name, model in models.items()}
sdpa_flops = resource_eval.counted_flops(models["baseline"], batches["baseline"], attn_implementation=None)
pd.DataFrame({"counted": {n: f["total"] for n, f in flops.items()}, "analytic": {n: f["total"] for n, f in flops_analytic.items()},
              "latency_ms": {n: 1e3 * t.median_s for n, t in latency.items()}})  # fmt: skip

# %% [markdown]
# The techniques table. Storage: `metrics.model_size_report` (int8 weights with their scales,
# bitsandbytes state). The pruned model's Linear weights are also measured as CSR matrices.

# %%
rows = []
for name, model in models.items():
    row = resource_eval.technique_row(
        name, model, devices[name], embedded[name], embedded["baseline"], flops[name], flops_analytic[name],
        batch_size, p.carbon_intensity_g_per_kwh,
    )  # fmt: skip
    t = latency[name]
    row |= {"latency_median_s": t.median_s, "latency_q25_s": t.q25_s, "latency_q75_s": t.q75_s, "latency_iqr_s": t.iqr_s}
    row["latency_ms_per_sentence"] = 1e3 * t.median_s / batch_size
    is_float = name in ("baseline", "pruned", "student")
    row["utilization"] = metrics.compute_utilization(flops[name]["total"], t.median_s, devices[name], dtype) if is_float else float("nan")
    row["linear_weight_bytes"] = resource_eval.linear_weight_bytes(model) if is_float else resource_eval.int8_linear_weight_bytes(model)
    row["linear_weight_csr_int64_bytes"] = resource_eval.linear_weight_bytes(model, torch.int64) if name == "pruned" else float("nan")
    row["zero_fraction"] = resource_eval.zero_fraction(model) if is_float else float("nan")
    rows.append(row)
table = resource_eval.add_relative_columns(pd.DataFrame(rows))
run.save_table(table, "techniques")
table[["technique", "device", "model_bytes", "compression_ratio", "latency_median_s", "throughput_sentences_per_s",
       "recall_at_1", "mrr", "fidelity_cosine", "top1_agreement", "pareto"]]  # fmt: skip

# %% [markdown]
# Dense vs CSR storage of the encoder's Linear weights across sparsities (global magnitude
# pruning): where does CSR start to save bytes?

# %%
sweep = resource_eval.csr_sweep(models["baseline"], p.csr_sparsities)
run.save_table(sweep, "csr_sweep")
sweep

# %%
t = table.set_index("technique")
fp32_linear_bytes = resource_eval.FP32_BYTES * sum(i * o for _, i, o in resource_eval.linear_shapes(teacher))
base_flops, base_analytic = flops["baseline"], flops_analytic["baseline"]
r4 = lambda x: round(float(x), 4)  # noqa: E731
metrics_out = {
    "pool_size": len(pool),
    "distill_texts": len(distill_texts),
    # computation: the FLOP counter against the analytic count (baseline, eager attention)
    "flops_linear_rel_err": r4(abs(base_flops["linear"] - base_analytic["linear"]) / base_analytic["linear"]),
    "flops_attention_rel_err": r4(abs(base_flops["attention"] - base_analytic["attention"]) / base_analytic["attention"]),
    "flops_total_rel_err": r4(abs(base_flops["total"] - base_analytic["total"]) / base_analytic["total"]),
    "flops_sdpa_attention_counted": int(sdpa_flops["total"] - sdpa_flops["linear"]),
    "flops_per_sentence_baseline": int(base_analytic["total"] // batch_size),
    # memory: int8 weights, pruning's dense and CSR storage
    "int8_linear_weight_bytes_ratio": r4(t.loc["int8-dynamic", "linear_weight_bytes"] / fp32_linear_bytes),
    "int8_bnb_linear_weight_bytes_ratio": r4(t.loc["int8-bnb", "linear_weight_bytes"] / fp32_linear_bytes),
    "pruned_zero_fraction": r4(t.loc["pruned", "zero_fraction"]),
    "pruned_dense_bytes_ratio": r4(t.loc["pruned", "model_bytes"] / t.loc["baseline", "model_bytes"]),
    "pruned_csr_bytes_ratio": r4(t.loc["pruned", "linear_weight_csr_int64_bytes"] / t.loc["pruned", "linear_weight_bytes"]),
    "csr_break_even_sparsity": r4(resource_eval.break_even(sweep["sparsity"], sweep["csr_int64_ratio"])),
    "csr_int32_break_even_sparsity": r4(resource_eval.break_even(sweep["sparsity"], sweep["csr_int32_ratio"])),
    # quality: recall drops, the student's distillation
    "int8_dynamic_recall_drop_points": r4(t.loc["int8-dynamic", "recall_drop_points"]),
    "int8_bnb_recall_drop_points": r4(t.loc["int8-bnb", "recall_drop_points"]),
    "student_init_recall_at_1": r4(resource_eval.retrieval_scores(student_init.queries, student_init.codes)["recall_at_1"]),
    "student_init_fidelity_cosine": r4(resource_eval.fidelity(student_init.queries, student_init.codes,
                                                              embedded["baseline"].queries, embedded["baseline"].codes)["fidelity_cosine"]),
}  # fmt: skip
metrics_out["student_fidelity_gain"] = r4(t.loc["student", "fidelity_cosine"] - metrics_out["student_init_fidelity_cosine"])
for name in models:
    key = name.replace("-", "_")
    for column in ("recall_at_1", "mrr", "fidelity_cosine", "top1_agreement", "compression_ratio"):
        metrics_out[f"{column}_{key}"] = r4(t.loc[name, column])
    metrics_out[f"model_bytes_{key}"] = int(t.loc[name, "model_bytes"])
    metrics_out[f"parameters_{key}"] = int(t.loc[name, "parameters"])
run.log_metrics(metrics_out)

timings_out = {
    "student_latency_ratio": r4(t.loc["student", "latency_median_s"] / t.loc["baseline", "latency_median_s"]),
    "pruned_latency_ratio": r4(t.loc["pruned", "latency_median_s"] / t.loc["baseline", "latency_median_s"]),
    "int8_dynamic_latency_ratio": r4(t.loc["int8-dynamic", "latency_median_s"] / t.loc["baseline", "latency_median_s"]),
    "int8_bnb_latency_ratio": r4(t.loc["int8-bnb", "latency_median_s"] / t.loc["baseline", "latency_median_s"]),
    "distill_seconds": r4(distill_seconds),
    "pareto_front_size": int(t["pareto"].sum()),
    "utilization_baseline": r4(t.loc["baseline", "utilization"]),
}  # fmt: skip
for name in models:
    key = name.replace("-", "_")
    timings_out |= {
        f"latency_ms_{key}": r4(1e3 * t.loc[name, "latency_median_s"]),
        f"throughput_{key}": r4(t.loc[name, "throughput_sentences_per_s"]),
        f"energy_j_per_1k_{key}": r4(t.loc[name, "energy_j_per_1k_sentences"]),
        f"mem_peak_growth_mb_{key}": r4(t.loc[name, "mem_peak_growth_bytes"] / 1e6),
        f"pareto_{key}": bool(t.loc[name, "pareto"]),
    }  # fmt: skip
run.log_timings(timings_out)
{**metrics_out, **{k: v for k, v in timings_out.items() if "ratio" in k or "pareto_front" in k}}
