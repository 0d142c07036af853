# %% [markdown]
# # 19 · COMET — W4A4KV4 with FMPQ on the trained tiny LM (perplexity)
# The tiny LM of the `tinylm` artifact is calibrated on a few train batches (per-Linear channel
# amax of the inputs), then fake-quantised under FP32, W8A8 (per-channel weights, per-token
# activations), uniform W4A4 (per-token INT4 activations), per-group W4A4, W4 + FMPQ, COMET
# (W4 + FMPQ + KV4) and COMET with a fixed share of INT8 groups (`paper19.fmpq`, `paper19.study`).
# The output head stays FP32. Feeds the tinylm-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"group": 64}
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
corpus_dir = run.artifact("corpus")
model, spec = zoo.load(run.artifact("tinylm") / p.tinylm_model)
seq_len = min(p.seq_len, spec.max_seq_len)
calib = corpus.eval_batches(corpus.load_tokens(corpus_dir, "train"), p.batch_size, seq_len, p.calib_batches)
evals = corpus.eval_batches(corpus.load_tokens(corpus_dir, "val"), p.batch_size, seq_len, p.eval_batches)
table = study.tinylm_table(model, calib, evals, study.schemes(p.int8_fractions), p.group, p.kv_group,
                           p.outlier_factor, progress=run.progress)
fp32 = table.set_index("scheme").loc["fp32", "val_ppl"]
table["ppl_rel_increase"] = table["val_ppl"] / fp32 - 1
run.save_table(table, "tinylm_schemes")
run.log_timings({"tinylm_seconds": round(time.perf_counter() - started, 2)})
table.round(4)

# %%
t = table.set_index("scheme")
gap = lambda s: float(t.loc[s, "ppl_rel_increase"])  # noqa: E731
int8_gain, int8_share = study.int8_groups_vs_group_scales(t["ppl_rel_increase"], lower_is_better=True)
run.log_metrics({
    "tinylm_fp32_ppl": round(fp32, 4),
    **{f"tinylm_{s}_ppl_rel_increase": round(gap(s), 5) for s in t.index if s != "fp32"},
    "tinylm_comet_minus_w8a8_ppl": round(gap("comet") - gap("w8a8"), 5),
    "tinylm_comet_gap_closed_vs_w4a4": round((gap("w4a4") - gap("comet")) / gap("w4a4"), 4) if gap("w4a4") > 0 else 0.0,
    "tinylm_w4a4_minus_fmpq_ppl": round(gap("w4a4") - gap("w4a4_fmpq"), 5),
    "tinylm_w4a4g_minus_fmpq_ppl": round(int8_gain, 5),  # the INT8 groups alone (same per-group scales)
    "tinylm_int8_groups_share_of_gain": None if int8_share is None else round(int8_share, 4),
    "tinylm_comet_int8_group_share": round(float(t.loc["comet", "int8_group_share"]), 4),
    "tinylm_comet_act_bits": round(float(t.loc["comet", "act_bits"]), 4),
})
