# %% [markdown]
# # 29 · DGQ — (b) one INT8 GEMM against group-wise W4A8 and A16W4, on the CPU
# Real kernels (`paper29.speed`, `shared.qmatmul`): DGQ's A8W4 layer (int4 storage, one INT8 GEMM
# and an epilogue), the lifted INT8 weight alone in qmatmul's W8A8 kernel, group-wise W4A8
# (K / g partial INT8 GEMMs on weights prepacked once, group scales and accumulation in oneDNN's
# epilogue; and the first runs' `_int_mm` version that repacks at every call, for context),
# A16W4 by dequantise-then-GEMM, aten's int4
# weight-only kernel, FP32. The paper's 3.24x is its CUTLASS kernel on a GPU; these are CPU
# ratios and say only what they say.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"speed_sizes": [2048]}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p29

# %%
from shared import notebook

run = notebook.start("29", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import torch

from paper29 import speed

torch.set_num_threads(p.num_threads)
started = time.perf_counter()
table = speed.sweep(p.speed_sizes, p.speed_ms, p.speed_group, p.speed_repeats, p.speed_warmup, seed=run.seed,
                    progress=run.progress)
run.save_table(table, "speed")
tm = speed.summary(table)
tm["speed_seconds"] = round(time.perf_counter() - started, 2)
run.log_timings(tm)
speed.ratios(table).round(2)

# %%
import matplotlib.pyplot as plt
import seaborn as sns

t = table.assign(ms=table["median_s"] * 1e3)
fig, axes = plt.subplots(1, len(p.speed_sizes), figsize=(5 * len(p.speed_sizes), 3.6), squeeze=False)
for ax, size in zip(axes[0], p.speed_sizes):
    sns.barplot(data=t[t["size"] == size], x="m", y="ms", hue="kernel", ax=ax)
    ax.set(yscale="log", title=f"K = N = {size}, g = {p.speed_group} (CPU, {p.num_threads} thread)", xlabel="tokens M",
           ylabel="ms per call")
    ax.legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig2_speed")
