# %% [markdown]
# # 29 · DGQ — (a) quality: the real pretrained MiniLM, the exact INT8 lift, the trained tiny LM
# Every linear of the chosen encoder layers of all-MiniLM-L6-v2 is quantised by each method
# (`paper29.methods`: numformats baselines, DGQ's two-phase search `paper29.dgq`), calibrated
# on docstring summaries of the train split; measured on summaries of the val split: per-layer
# relative output MSE (each layer on its own FP32 inputs), embedding cosine to FP32, top-10
# retrieval agreement. The DGQ layers are also checked for the lift (W_s8 in INT8, bit-exact
# dequantisation) and run through the real A8W4 kernel (`paper29.dgq.DGQLinear`). Then the tiny
# LM's perplexity. (One notebook for both: they share the imports and transformers' start-up.)

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"eval_texts": 200}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p29

# %%
from shared import notebook

run = notebook.start("29", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import pandas as pd
import torch

from paper29 import methods
from shared import corpus, zoo

torch.set_num_threads(p.num_threads)
started = time.perf_counter()
docs = corpus.load_docstrings(run.artifact("corpus"))
summaries = docs.drop_duplicates("summary")
calib_texts = summaries[summaries["split"] == "train"]["summary"].head(p.calib_texts).tolist()
eval_texts = summaries[summaries["split"] == "val"]["summary"].head(p.eval_texts).tolist()
model, tok = zoo.minilm()
layers = range(len(model.encoder.layer)) if p.minilm_layers == "all" else p.minilm_layers
keep = tuple(f"encoder.layer.{i}." for i in layers)  # the other layers stay FP32
settings = methods.Settings(group=p.group, n1=p.n1, n2=p.n2, percentile=p.percentile, alpha=p.alpha)
enc_cal = methods.encode(tok, calib_texts, p.max_length)
calib = methods.capture_inputs(model, lambda: model(**enc_cal), enc_cal["attention_mask"], p.calib_tokens, run.seed, keep)
enc_err = methods.encode(tok, eval_texts[:64], p.max_length)
eval_inputs = methods.capture_inputs(model, lambda: model(**enc_err), enc_err["attention_mask"], prefixes=keep)
enc = methods.encode(tok, eval_texts, p.max_length)
ref = methods.embed(model, enc)
print(f"{len(calib)} linears quantised; {len(calib_texts)} calibration / {len(eval_texts)} evaluation texts")

# %%
rows, dgq_layers = [], {}
for name in p.methods:
    qmodel, qlayers = methods.quantize_model(model, name, calib, settings, progress=run.progress)
    errs = methods.layer_errors(model, qlayers, eval_inputs)
    emb = methods.embed(qmodel, enc)
    rows.append({"method": name, "layer_rel_mse": sum(errs.values()) / len(errs), "layer_rel_mse_max": max(errs.values()),
                 "cosine": methods.cosine(ref, emb), "topk_agreement": methods.topk_agreement(ref, emb, p.top_k)})
    if name == "dgq":
        dgq_layers = qlayers
table = pd.DataFrame(rows)
run.save_table(table, "minilm_quality")
table

# %% [markdown]
# The lift on every DGQ layer: W_s8 = S2 (q - z) inside INT8; s1 * W_s8 equal, bit for bit, to the
# group-wise reading (s1 S2)(q - z) and to the weight the real kernel's storage decodes to; the
# kernel's output (qmatmul's A8W4, one INT8 GEMM, plus the zero-point epilogue) against the
# fake-quant reference on the evaluation inputs.

# %%
m = methods.lift_report(dgq_layers, eval_inputs) | {"n_layers": len(calib), "n_eval_texts": len(eval_texts)}
m |= methods.quality_metrics(table, p.top_k)
run.log_metrics(m)
run.log_timings({"minilm_seconds": round(time.perf_counter() - started, 2)})
m

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
order = table.sort_values("layer_rel_mse")["method"]
sns.barplot(data=table, y="method", x="layer_rel_mse", order=order, ax=axes[0])
axes[0].set(xscale="log", xlabel="mean per-layer relative output MSE", ylabel="")
sns.barplot(data=table, y="method", x="cosine", order=order, ax=axes[1])
axes[1].set(xlabel="embedding cosine to FP32", ylabel="", xlim=(max(0.0, table["cosine"].min() - 0.02), 1.0))
fig.tight_layout()
run.save_figure(fig, "fig1_minilm_quality")

# %% [markdown]
# ## The trained tiny LM
# The tinylm artifact's model (trained on the stdlib corpus) with every decoder linear quantised
# (the tied output head stays FP32), calibrated on train windows; perplexity on val windows.

# %%
from shared import metrics

started = time.perf_counter()
corpus_dir, tinylm_dir = run.artifact("corpus"), run.artifact("tinylm")
lm, spec = zoo.load(tinylm_dir / p.lm_model)
lm.eval()
seq = min(p.lm_seq_len, spec.max_seq_len)
cal = corpus.eval_batches(corpus.load_tokens(corpus_dir, "train"), p.lm_batch, seq, p.lm_calib_batches)
val = corpus.eval_batches(corpus.load_tokens(corpus_dir, "val"), p.lm_batch, seq, p.lm_eval_batches)
x_cal = torch.cat([x for x, _ in cal])
lm_calib = methods.capture_inputs(lm, lambda: lm(x_cal))
lm_settings = methods.Settings(group=p.lm_group, n1=p.n1, n2=p.n2, percentile=p.percentile, alpha=p.alpha)
rows = [{"method": "fp32", "perplexity": metrics.perplexity(lm, val)}]
for name in p.lm_methods:
    qlm, _ = methods.quantize_model(lm, name, lm_calib, lm_settings, progress=run.progress)
    rows.append({"method": name, "perplexity": metrics.perplexity(qlm, val)})
lm_table = pd.DataFrame(rows)
lm_table["ratio_to_fp32"] = lm_table["perplexity"] / lm_table.loc[0, "perplexity"]
run.save_table(lm_table, "tinylm_perplexity")
run.log_metrics(methods.perplexity_metrics(lm_table))
run.log_timings({"tinylm_seconds": round(time.perf_counter() - started, 2)})
lm_table
