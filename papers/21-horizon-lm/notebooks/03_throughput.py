# %% [markdown]
# # 21 · Horizon-LM — step time against the standard and ZeRO-Offload-style trainers
# The model of `model` trained by four trainers for `throughput_steps` timed steps each: the
# standard autograd trainer (everything resident), the ZeRO-Offload-style trainer (parameters
# and autograd on the device; gradients to the host; AdamW on the host; parameters back), and
# the Horizon engine in order (every phase on the main thread: the breakdown) and overlapped
# (copy thread / CUDA copy stream for StreamIn, an optimizer thread for the per-layer host
# AdamW). On this CPU the "device" is the CPU: no PCIe to hide, recomputation costs one more
# forward, so the engine is expected to be slower; the paper's speed-ups are GPU numbers.
# Feeds the claims throughput-vs-offload and overlap-hides-transfers (timings).

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"throughput_steps": 3}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p21

# %%
from shared import notebook

run = notebook.start("21", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper21 import experiment

torch.set_num_threads(p.num_threads)
batches = experiment.corpus_batches(run.artifact("corpus"), p, seed=run.seed, device="cpu")
speed, phases = experiment.time_trainers(p, batches, seed=run.seed, device=run.device, progress=run.progress)
run.save_table(speed, "step_times")
run.save_table(phases, "step_phases")
s = speed.set_index("trainer")["tokens_per_s"]
run.log_timings({
    "tokens_per_s": {k: round(float(v), 1) for k, v in s.items()},
    "horizon_vs_offload_throughput": float(s["horizon_overlapped"] / s["zero_offload_style"]),
    "horizon_vs_standard_throughput": float(s["horizon_overlapped"] / s["standard"]),
    "overlap_speedup": float(s["horizon_overlapped"] / s["horizon_sequential"]),
    "throughput_device": run.device,
})  # fmt: skip
speed

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.3]})
axes[0].barh(speed["trainer"], speed["tokens_per_s"])
axes[0].set(xlabel="tokens / s", title=f"Throughput ({p.model.n_layers} layers, {run.device}, {p.num_threads} thread(s))")
table = phases[phases["trainer"].isin(["horizon_sequential", "zero_offload_style"])]
pivot = table.pivot(index="trainer", columns="phase", values="s_per_step").fillna(0)
pivot.plot.barh(stacked=True, ax=axes[1])
axes[1].set(xlabel="seconds per step", ylabel="", title="Step time breakdown (sequential schedules)")
axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
run.save_figure(fig, "fig3_step_time")
