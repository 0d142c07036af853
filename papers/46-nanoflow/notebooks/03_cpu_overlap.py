# %% [markdown]
# # 46 · NanoFlow — a real overlap experiment on this machine
# Not a model: a compute-bound stream (square float32 GEMMs) and a memory-bound stream (a GEMV
# over a float32 "KV cache") run one after the other on one core, one after the other with all
# cores each (how a sequential engine gives every operation the whole device), and at the same
# time on one core each (the partitioned device) (`paper46.overlap`). Wall-clock, so timings only,
# with the load average of this shared machine beside them. On gpu scale the two streams are CUDA
# streams. Feeds cpu-overlap-real (reported, not gated).

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"overlap_target_s": 1.0}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p46

# %%
from shared import notebook

run = notebook.start("46", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import os

import pandas as pd
import torch

from paper46 import overlap as O

torch.set_num_threads(1)
dev = run.device
streams = [O.calibrate(O.gemm_stream(p.overlap_gemm_n, dev, seed=run.seed), p.overlap_target_s, dev),
           O.calibrate(O.gemv_stream(p.overlap_kv_mb, device=dev, seed=run.seed + 1), p.overlap_target_s, dev)]
threads = min(p.overlap_threads, os.cpu_count() or 1)
res = O.experiment(streams, threads, p.overlap_repeats, dev)
table = pd.DataFrame([{"mode": m, "repeat": i, "seconds": s} for m, v in res["all"].items() for i, s in enumerate(v)])
run.save_table(table, "overlap_times")
gemm_flops = 2 * p.overlap_gemm_n**3 * streams[0].reps
gemv_bytes = p.overlap_kv_mb * 2**20 * streams[1].reps
timings = {"overlap_ratio": round(res["overlap_ratio"], 4), "overlap_ratio_vs_one_core": round(res["overlap_ratio_vs_1"], 4),
           **{f"overlap_{m}_s": round(s, 4) for m, s in res["seconds"].items()},
           "overlap_gemm_reps": streams[0].reps, "overlap_gemv_reps": streams[1].reps,
           "overlap_gemm_gflops_one_core": round(gemm_flops / 1e9 / (res["seconds"]["sequential_1"] / 2), 2),
           "overlap_threads": threads, "overlap_load_before": round(res["load_before"], 2),
           "overlap_load_after": round(res["load_after"], 2), "overlap_cpus": os.cpu_count()}
run.log_timings(timings)
timings

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1, 2]})
modes = ["sequential_1", "sequential_all", "concurrent"]
axes[0].bar(range(3), [res["seconds"][m] for m in modes], color=["0.6", "C0", "C2"])
axes[0].set_xticks(range(3), ["sequential\n1 core", f"sequential\n{threads} cores", "concurrent\n1 core each"], fontsize=8)
axes[0].set(ylabel="seconds (median)", title=f"concurrent / sequential = {res['overlap_ratio']:.2f}")
rows = [("sequential_all", 1), ("concurrent", 0)]
for mode, y in rows:
    for name, start, end in res["timelines"][mode]:
        axes[1].barh(y + (0.2 if name == "gemm" else -0.2), end - start, left=start, height=0.35,
                     color="C0" if name == "gemm" else "C1", edgecolor="k", lw=0.3)
axes[1].set_yticks([0, 1], ["concurrent", f"sequential ({threads} cores)"])
axes[1].legend(handles=[Patch(color="C0", label="GEMM (compute-bound)"),
                        Patch(color="C1", label=f"GEMV over {p.overlap_kv_mb:g} MB (memory-bound)")],
               fontsize=8, loc="upper right")
axes[1].set(xlabel="seconds", title=f"timeline of the last repeat (load avg {res['load_before']:.1f})")
fig.tight_layout()
run.save_figure(fig, "fig4_cpu_overlap")
