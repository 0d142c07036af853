# %% [markdown]
# # 54 · DistZO2 — (a) MeZO's memory and the ZO2 table, (b) convergence of a MeZO fine-tune
# (a) Peak memory of inference, MeZO-SGD (seed-replayed z, in place) and AdamW fine-tuning of
# the same random-init Llama, each measured in a fresh forked process: parameter bytes + the
# growth of the resident set size (VmHWM, exact) over a step (`paper54.memory`). Then the
# published ZO2 GPU-memory table (OPT-1.3B..175B, data/) against a three-term model fitted
# without 175B and extrapolated to it. (b) MeZO fine-tune of the stdlib-pretrained tinylm
# `conv_model` on held-out text (the corpus's val split: first 80 % to train, the rest to
# evaluate), MeZO's lr chosen on the train split, against AdamW on the same batches. Feeds the mem-*, zo2-* and conv-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"conv_steps": 200}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p54

# %%
from shared import notebook

run = notebook.start("54", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import importlib
import time

import torch

from paper54 import memory

torch.set_num_threads(p.num_threads)
importlib.import_module("transformers.models.llama.modeling_llama")  # before the clock: *_seconds time the work, not imports
started = time.perf_counter()
peaks = memory.measure_peaks(p.mem_model, p.mem_batch, p.mem_seq, seed=run.seed)
run.save_table(peaks, "memory_peaks")
by = peaks.set_index("method")["peak_bytes"]
mem = {
    "mem_mezo_over_inference": by["mezo"] / by["inference"],
    "mem_mezo_over_adamw": by["mezo"] / by["adamw"],
    "mem_adamw_state_over_params": float(peaks.set_index("method").loc["adamw", "optimizer_bytes"]
                                         / peaks.set_index("method").loc["adamw", "param_bytes"]),
}
# RSS growth is a measurement (it varies a little run to run): timings.json, not metrics.json
run.log_timings({k: round(float(v), 4) for k, v in mem.items()} | {"memory_seconds": round(time.perf_counter() - started, 2)})
run.log_metrics({"mem_param_bytes": int(peaks["param_bytes"].iloc[0]),
                 "mem_exact_adamw_over_mezo_state": float((peaks.set_index("method").loc["adamw", ["param_bytes", "grad_bytes", "optimizer_bytes"]].sum())
                                                         / peaks["param_bytes"].iloc[0])})  # fmt: skip
peaks

# %%
table = memory.zo2_table()
fit = memory.fit_zo2(table)
table["fit_gb"] = fit.pop("pred")
run.save_table(table, "zo2_memory_table")
opt175 = table.set_index("model").loc["OPT-175B"]
run.log_metrics({
    "zo2_opt175b_gb": float(opt175["gpu_memory_gb"]),
    "zo2_opt175b_over_all_weights": round(float(opt175["gpu_memory_gb"] / opt175["all_weights_gb"]), 4),
    "zo2_fit_r2": round(fit["r2"], 4),
    "zo2_fit_blocks_on_device": round(fit["blocks_on_device"], 3),
    "zo2_fit_c0_gb": round(fit["c0_gb"], 3),
    "zo2_fit_175b_pred_gb": round(fit["holdout_pred_gb"], 3),
    "zo2_fit_175b_rel_err": round(fit["holdout_rel_err"], 4),
})  # fmt: skip
fit

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
ax = axes[0]
parts = peaks.set_index("method")[["param_bytes", "grad_bytes", "optimizer_bytes"]] / 2**20
parts["activations + rest (measured)"] = (peaks.set_index("method")["peak_bytes"] / 2**20 - parts.sum(axis=1)).clip(lower=0)
parts.plot.bar(stacked=True, ax=ax, rot=0)
ax.set(ylabel="peak MiB (parameters + RSS growth of a step)", xlabel="",
       title=f"one step, batch {p.mem_batch} x {p.mem_seq}, {peaks['param_bytes'].iloc[0] / 2**20:.1f} MiB of weights")
ax = axes[1]
ax.plot(table["params_billion"], table["gpu_memory_gb"], "o", label="ZO2 README (measured, GPU)")
ax.plot(table["params_billion"], table["fit_gb"], "-", label=f"fit without 175B: {fit['c0_gb']:.2f} GB + embeddings + {fit['blocks_on_device']:.1f} blocks")
ax.plot(table["params_billion"], table["all_weights_gb"], ":", label="all fp16 weights on the GPU")
ax.set(xscale="log", yscale="log", xlabel="OPT parameters (billions)", ylabel="GPU memory (GB)", title="ZO2: MeZO with CPU offloading")
ax.legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig1_memory")

# %% [markdown]
# (b) Convergence: MeZO on the pretrained tinylm, held-out text, against a first-order (AdamW)
# fine-tune on the same batches for the same steps. MeZO's lr is chosen first, by a short sweep
# scored on the TRAIN split only (`paper54.finetune.sweep_lr`).

# %%
import pandas as pd

from paper54 import finetune
from shared import corpus, zoo

started = time.perf_counter()
corpus_dir, tinylm_dir = run.artifact("corpus"), run.artifact("tinylm")
lm, spec = zoo.load(tinylm_dir / p.conv_model)
val = corpus.load_tokens(corpus_dir, "val")
cut = int(len(val) * 0.8)
train = corpus.TokenBatches(val[:cut], p.conv_batch, p.conv_seq, seed=run.seed)
train_score = corpus.eval_batches(val[:cut], p.conv_batch, p.conv_seq, p.conv_eval_batches)
held = corpus.eval_batches(val[cut:], p.conv_batch, p.conv_seq, p.conv_eval_batches)
conv_lr, sweep = finetune.sweep_lr(lm, train, train_score, p.conv_sweep_lrs, p.conv_sweep_steps, p.eps, run.seed)
sweep = pd.DataFrame(sweep)
run.save_table(sweep, "convergence_lr_sweep")
curves, train_rows = [], []
for method, lr in (("mezo", conv_lr), ("adamw", p.conv_fo_lr)):
    model = lm if method == "mezo" else zoo.load(tinylm_dir / p.conv_model)[0]
    curve, rows = finetune.finetune(model, train, p.conv_steps, method, lr, p.eps, run.seed, held=held,
                                    eval_every=p.conv_eval_every, progress=run.progress)
    curves += [r | {"method": method, "lr": lr} for r in curve]
    train_rows += [r | {"method": method, "lr": lr} for r in rows]
curve, train_losses = pd.DataFrame(curves), pd.DataFrame(train_rows)
run.save_table(curve, "convergence_heldout")
run.save_table(train_losses, "convergence_train")
ends = curve.groupby("method")["heldout_loss"].agg(["first", "last"])
drop = (ends["first"] - ends["last"]).round(5)
run.log_metrics({
    "conv_lr_chosen": conv_lr,
    "conv_lr_sweep": {f"{r.lr:g}": round(float(r.train_loss_after), 5) for r in sweep.itertuples()},
    "conv_lr_sweep_train_loss_before": round(float(sweep["train_loss_before"].iloc[0]), 5),
    "conv_heldout_loss_start": round(float(ends.loc["mezo", "first"]), 5),
    "conv_heldout_loss_end": round(float(ends.loc["mezo", "last"]), 5),
    "conv_heldout_drop": float(drop["mezo"]),
    "conv_fo_heldout_loss_end": round(float(ends.loc["adamw", "last"]), 5),
    "conv_fo_heldout_drop": float(drop["adamw"]),
    "conv_fo_minus_mezo_drop": round(float(drop["adamw"] - drop["mezo"]), 5),
})  # fmt: skip
run.log_timings({"conv_seconds": round(time.perf_counter() - started, 2)})
sweep

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for method, rows in train_losses.groupby("method"):
    smooth = rows["train_loss"].rolling(max(len(rows) // 20, 1), min_periods=1).mean()
    ax.plot(rows["step"], smooth, alpha=0.6, label=f"{method} train (smoothed)")
for method, rows in curve.groupby("method"):
    ax.plot(rows["step"], rows["heldout_loss"], "o-", label=f"{method} held-out (lr {rows['lr'].iloc[0]:g})")
ax.set(xlabel="step", ylabel="loss (nats/token)", title=f"MeZO vs AdamW fine-tune of tinylm {p.conv_model}")
ax.legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig3_convergence")
