# %% [markdown]
# # 19 · COMET — FMPQ on the pretrained MiniLM (embeddings, code search)
# all-MiniLM-L6-v2 (real BERT weights, with the BERT family's outlier hidden dimensions) under
# the same schemes as notebook 01, calibrated on docstring summaries and code of the corpus
# artifact: cosine of every embedding to FP32's, code-search recall@k (summary -> its code), and
# top-k neighbour agreement with FP32. K and V are quantised as a KV4 cache would hold them.
# Feeds the minilm-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"minilm_group": 128}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p19

# %%
from shared import notebook

run = notebook.start("19", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import torch

from paper19 import study
from shared import corpus, zoo

torch.set_num_threads(p.num_threads)
started = time.perf_counter()
pairs, calib_texts = study.code_search_pairs(corpus.load_docstrings(run.artifact("corpus")), p.minilm_pairs,
                                             p.minilm_calib_texts, run.seed)
model, tokenizer = zoo.minilm()
k = p.recall_k
schemes = study.schemes(p.int8_fractions if p.minilm_sweep else [], p.minilm_schemes)
table = study.minilm_table(model, tokenizer, calib_texts, list(pairs["summary"]), list(pairs["code"]), schemes,
                           p.minilm_group, p.minilm_kv_group, p.outlier_factor, p.minilm_max_length, p.minilm_batch_size, k, progress=run.progress)
run.save_table(table, "minilm_schemes")
run.log_timings({"minilm_seconds": round(time.perf_counter() - started, 2)})
table.round(4)

# %%
t = table.set_index("scheme")
rec = lambda s: 100 * float(t.loc[s, f"recall_at_{k}"])  # noqa: E731  (points)
int8_gain, int8_share = study.int8_groups_vs_group_scales(t["cosine_to_fp32"], lower_is_better=False)
run.log_metrics({
    "minilm_fp32_recall": round(rec("fp32"), 3),
    **{f"minilm_{s}_recall": round(rec(s), 3) for s in t.index if s != "fp32"},
    **{f"minilm_{s}_cosine": round(float(t.loc[s, "cosine_to_fp32"]), 5) for s in t.index if s != "fp32"},
    "minilm_comet_minus_w8a8_recall": round(rec("comet") - rec("w8a8"), 3),
    "minilm_comet_minus_w4a4_recall": round(rec("comet") - rec("w4a4"), 3),
    "minilm_w4a4_recall_drop": round(rec("fp32") - rec("w4a4"), 3),
    "minilm_comet_minus_w4a4_cosine": round(float(t.loc["comet", "cosine_to_fp32"] - t.loc["w4a4", "cosine_to_fp32"]), 5),
    "minilm_fmpq_minus_w4a4g_cosine": round(int8_gain, 5),  # the INT8 groups alone (same per-group scales)
    "minilm_int8_groups_share_of_gain": None if int8_share is None else round(int8_share, 4),
    "minilm_comet_neighbour_agreement": round(float(t.loc["comet", "neighbour_agreement"]), 4),
    "minilm_comet_int8_group_share": round(float(t.loc["comet", "int8_group_share"]), 4),
    "minilm_comet_act_bits": round(float(t.loc["comet", "act_bits"]), 4),
})
