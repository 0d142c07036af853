# %% [markdown]
# # 05 · Resource-efficient LLMs (survey) — the same harness on a decoder language model
# The survey is about LLMs; MiniLM is an encoder. Here the harness measures the same two
# weight compressions (§6.1.1 pruning, §6.1.2 quantization) on a causal language model: the
# `lm_model` decoder of the shared `tinylm` artifact, trained once by its own pipeline stage on
# the corpus and only *read* here (paper 01 reads the same checkpoints; neither retrains them).
# Quality is validation perplexity (lower is better), so EfficientLLM's compression rate (MCR,
# Eq. 9) uses its perplexity reading: size ratio x ppl_base / ppl. Feeds the claim
# lm-int8-keeps-perplexity.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"lm_model": "mha"}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p05

# %%
from shared import notebook

run = notebook.start("05", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper05 import resource_eval
from shared import corpus, zoo

models_dir = run.artifact("tinylm")
corpus_dir = run.artifact("corpus")
if not (models_dir / p.lm_model).is_dir():
    have = sorted(d.name for d in models_dir.iterdir() if d.is_dir())
    raise ValueError(f"p05.lm_model: {p.lm_model!r} is not a tinylm model; have: {', '.join(have)}")
model, spec = zoo.load(models_dir / p.lm_model)
train = run.tree["tinylm"]["train"]
batches = corpus.eval_batches(corpus.load_tokens(corpus_dir, "val"), train["batch_size"], train["seq_len"], p.lm_eval_batches)
torch.set_num_threads(p.num_threads)
table = resource_eval.lm_techniques(
    model, batches, qscheme=p.int8_dynamic_qscheme, prune_amount=p.prune_amount,
    repeats=p.latency_repeats, warmup=p.latency_warmup, num_threads=p.num_threads, progress=run.progress,
)  # fmt: skip
run.save_table(table, "language_model")
table

# %%
by = table.set_index("technique")
run.log_metrics({
    "lm_params": zoo.param_counts(spec)["total"],
    "lm_perplexity_baseline": round(float(by.loc["baseline", "perplexity"]), 4),
    "lm_int8_perplexity_ratio": round(float(by.loc["int8-dynamic", "perplexity_ratio"]), 5),
    "lm_int8_compression": round(float(by.loc["int8-dynamic", "compression"]), 4),
    "lm_int8_mcr": round(float(by.loc["int8-dynamic", "mcr"]), 4),
    "lm_pruned_perplexity_ratio": round(float(by.loc["pruned", "perplexity_ratio"]), 5),
    "lm_pruned_mcr": round(float(by.loc["pruned", "mcr"]), 4),
})  # fmt: skip
run.log_timings({
    "lm_int8_latency_ratio": round(float(by.loc["int8-dynamic", "latency_ratio"]), 4),
    "lm_pruned_latency_ratio": round(float(by.loc["pruned", "latency_ratio"]), 4),
})  # fmt: skip
