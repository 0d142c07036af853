# %% [markdown]
# # 54 · DistZO2 — (c) ZO2: decoder layers offloaded to the host, streamed through a device pool
# `paper54.offload.ZO2` keeps every decoder layer in a flat host buffer and streams it through
# `off_pool` device buffers, overlapping the copies with the dual (+/-) forward of the layer
# before. On CPU the "device" is ordinary memory and the link is emulated: a background thread
# per direction does the copy and holds it until bytes / bandwidth seconds have passed. The
# bandwidth is set so that T_copy(block) = ratio x T_compute(block), T_compute measured in the
# no-offload run (the same dual forward with every layer resident). On CUDA (gpu scale) the
# copies are real pinned host -> device copies on their own streams, unshaped. Feeds the off-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"off_steps": 10}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p54

# %%
from shared import notebook

run = notebook.start("54", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import importlib
import math
import statistics
import time

import pandas as pd
import torch

from paper54 import mezo, offload
from shared import zoo

torch.set_num_threads(p.num_threads)
for module in ("transformers.models.llama.modeling_llama", "transformers.masking_utils"):
    importlib.import_module(module)  # before the clock: off_seconds times the work, not imports
batches = mezo.random_batches(p.off_model.vocab_size, 4, p.off_batch, p.off_seq, seed=run.seed)
cfg = mezo.ZOConfig(eps=p.eps, lr=1e-4, seed=run.seed)


def timed(offloaded: bool, bandwidth: float = math.inf) -> dict:
    model = zoo.build(p.off_model, seed=run.seed).eval()
    zo = offload.ZO2(model, cfg, device=run.device, offload=offloaded, pool=p.off_pool, bandwidth=bandwidth)
    steps, blocks, embeds, heads = [], [], [], []
    for t in range(p.off_warmup + p.off_steps):
        x, y = batches[t % len(batches)]
        if run.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        zo.step(x, y, t)
        if run.device.startswith("cuda"):
            torch.cuda.synchronize()
        if t >= p.off_warmup:
            steps.append(time.perf_counter() - started)
            blocks += zo.block_s
            embeds.append(zo.embed_s)
            heads.append(zo.head_s)
    zo.finish()
    return {"step_s": statistics.median(steps), "block_s": statistics.median(blocks), "embed_s": statistics.median(embeds),
            "head_s": statistics.median(heads), "device_bytes": zo.device_bytes()}  # fmt: skip


started = time.perf_counter()
base = timed(False)
n_blocks = p.off_model.n_layers
model = zoo.build(p.off_model, seed=run.seed)
block_bytes = sum(q.numel() * q.element_size() for q in model.model.layers[0].parameters())
rows = [{"config": "no offload", "ratio": 0.0, "bandwidth_GBps": math.inf, **base, "modelled_s": base["step_s"]}]
for ratio in run.progress(p.off_copy_ratios, desc="offload"):
    if run.device.startswith("cuda"):  # a real link: its bandwidth is what the hardware gives
        bandwidth, t_copy = math.inf, float("nan")
    else:
        t_copy = ratio * base["block_s"]
        bandwidth = block_bytes / t_copy
    res = timed(True, bandwidth)
    modelled = offload.schedule_seconds(base["embed_s"], base["block_s"], base["head_s"], t_copy, n_blocks, p.off_pool) \
        if math.isfinite(t_copy) else float("nan")
    rows.append({"config": f"offload, T_copy = {ratio:g} x T_compute", "ratio": ratio, "bandwidth_GBps": bandwidth / 1e9,
                 **res, "modelled_s": modelled})  # fmt: skip
    if run.device.startswith("cuda"):
        break
table = pd.DataFrame(rows)
table["slowdown"] = table["step_s"] / base["step_s"]
table["measured_over_model"] = table["step_s"] / table["modelled_s"]
run.save_table(table, "offload_timing")
off = table[table["ratio"] > 0].set_index("ratio")
timings = {f"off_slowdown_r{r:g}".replace(".", "p"): round(float(off.loc[r, "slowdown"]), 4) for r in off.index}
timings |= {f"off_measured_over_model_r{r:g}".replace(".", "p"): round(float(off.loc[r, "measured_over_model"]), 4) for r in off.index}
timings |= {"off_block_compute_s": base["block_s"], "off_seconds": round(time.perf_counter() - started, 2), "off_device": run.device}
run.log_timings(timings)
run.log_metrics({"off_device_bytes_ratio": round(float(off["device_bytes"].iloc[0] / base["device_bytes"]), 4),
                 "off_block_bytes": int(block_bytes), "off_n_blocks": n_blocks})  # fmt: skip
table

# %%
# the reference runs on the same device (z is drawn by that device's generator)
serial_model, zo_model = zoo.build(p.off_model, seed=run.seed).eval().to(run.device), zoo.build(p.off_model, seed=run.seed).eval()
mezo.train_serial(serial_model, [(x.to(run.device), y.to(run.device)) for x, y in batches], cfg, p.off_check_steps)
zo = offload.ZO2(zo_model, cfg, device=run.device, offload=True, pool=p.off_pool)
for t in range(p.off_check_steps):
    zo.step(*batches[t % len(batches)], t)
zo.finish()
diff = float((mezo.flat(zo_model) - mezo.flat(serial_model)).abs().max())
run.log_metrics({"off_max_abs_diff_vs_serial": float(f"{diff:.3g}"), "off_matches_serial": diff <= 1e-6})
diff

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.bar(table["config"].str.replace("offload, ", "", regex=False), table["step_s"] * 1e3, label="measured", alpha=0.8)
ax.plot(table["config"].str.replace("offload, ", "", regex=False), table["modelled_s"] * 1e3, "kD", label="schedule model")
ax.set(ylabel="ms per MeZO step", title=f"ZO2 offload: {n_blocks} layers, pool {p.off_pool}, {run.device}")
ax.tick_params(axis="x", labelsize=7)
ax.legend()
fig.tight_layout()
run.save_figure(fig, "fig2_offload")
