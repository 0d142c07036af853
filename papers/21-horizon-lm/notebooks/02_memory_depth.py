# %% [markdown]
# # 21 · Horizon-LM — device memory against depth
# The same width at each depth of `depths`: the standard autograd trainer's device state
# (parameters, gradients, AdamW moments, activations saved for backward), the
# ZeRO-Offload-style trainer's (the same without the moments), and the Horizon engine's peak
# (two layer templates, the embedding/head template, the layer in flight: its activations and
# weight gradients, the hidden state and its gradient; checkpoints on the host, or on the
# device). Counted tensor by tensor (each storage once), the same counter for all; on CUDA
# `torch.cuda.max_memory_allocated` too. Host bytes per parameter of the engine's state give the
# headline projection. Feeds the claims device-memory-flat, standard-grows-linearly,
# host-bytes-per-param and max-model-on-one-node.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"depths": [2, 4, 8]}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p21

# %%
from shared import notebook

run = notebook.start("21", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd
import torch

from paper21 import experiment

torch.set_num_threads(p.num_threads)
batches = experiment.corpus_batches(run.artifact("corpus"), p, seed=run.seed, device="cpu")
rows = []
for depth in run.progress(p.depths, desc="depths"):
    rows += experiment.memory_row(p, depth, batches, seed=run.seed, device=run.device)
table = pd.DataFrame(rows)
run.save_table(table, "memory_by_depth")
table[["depth", "trainer", "params", "device_bytes", "host_bytes", "cuda_peak_bytes"]]

# %%
summary = experiment.depth_summary(table) | experiment.host_summary(table, p.host_ram_tb)
summary["engine_device_ckpt_peak_ratio_deep_shallow"] = experiment.depth_summary(table, "horizon_ckpt_device")[
    "engine_peak_ratio_deep_shallow"]  # fmt: skip
run.log_metrics({k: round(v, 6) if isinstance(v, float) else v for k, v in summary.items()})
summary

# %%
import matplotlib.pyplot as plt

labels = {"standard": "standard autograd trainer", "zero_offload_style": "ZeRO-Offload-style (moments on host)",
          "horizon_ckpt_host": "Horizon (checkpoints on host)", "horizon_ckpt_device": "Horizon (checkpoints on device)"}
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for kind, g in table.groupby("trainer", sort=False):
    axes[0].plot(g["depth"], g["device_bytes"] / 2**20, "o-", label=labels[kind])
axes[0].set(xlabel="layers", ylabel="device MiB (counted tensors)", xscale="log", yscale="log",
            title=f"Device memory vs depth (d={p.model.d_model}, {run.device})")
axes[0].set_xticks(p.depths, [str(d) for d in p.depths])
axes[0].minorticks_off()
axes[0].legend(fontsize=7)
eng = table[table["trainer"] == "horizon_ckpt_host"].set_index("depth")
parts = eng[[c for c in eng.columns if c.startswith("device_") and c != "device_bytes"]].fillna(0) / 2**20
parts = parts.loc[:, parts.sum() > 0]  # the standard trainer's parts are not the engine's
parts.columns = [c.removeprefix("device_") for c in parts.columns]
parts.plot.bar(stacked=True, ax=axes[1])
axes[1].set(xlabel="layers", ylabel="MiB at the engine's peak", title="What the engine holds at its peak")
axes[1].legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig2_memory_vs_depth")
