# %% [markdown]
# # 32 · Fast and Accurate Model Scaling — runtime vs flops and activations
# Times a forward pass and a training step (forward, backward, SGD update) of every scaled
# network on `run.device`, interleaved round-robin after a warm-up (`shared.timing`), and
# correlates log runtime with log activations and with log flops across the networks.
# Feeds the claims runtime-tracks-activations-train/-forward and fast-scaling-is-faster
# (through timings.json: wall-clock numbers are not deterministic). The paper's claim is about
# memory-bandwidth-limited accelerators (GPUs); a small CPU is compute-bound, so at the cpu
# and smoke scales we measure and report, but do not expect, the claim to hold.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"runtime_batch_size": 64}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p32

# %%
from shared import notebook

run = notebook.start("32", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper32 import scaling

base = scaling.NetConfig(p.stem_width, tuple(p.widths), tuple(p.depths), p.resolution)
table = scaling.runtime_table(
    base,
    p.runtime_strategies,
    p.runtime_scale_factors,
    p.alpha,
    batch_size=p.runtime_batch_size,
    repeats=p.runtime_repeats,
    warmup=p.runtime_warmup,
    num_threads=p.runtime_num_threads,
    device=run.device,
    dtype=p.runtime_dtype,
    width_multiple=p.width_multiple,
    seed=run.seed,
    progress=run.progress,
)
run.save_table(table, "runtime")
table

# %%
timings = scaling.runtime_correlations(table)
by_network = table.set_index(["strategy", "s"])
s_max = max(p.runtime_scale_factors)
if {"dWr", "dwr"} <= set(p.runtime_strategies):
    timings["train_time_dWr_over_dwr_at_max_s"] = (
        by_network.loc[("dWr", s_max), "train_median_s"] / by_network.loc[("dwr", s_max), "train_median_s"]
    )
for (strategy, s), row in by_network.iterrows():
    timings[f"forward_ms_{strategy}_s{s:g}"] = 1e3 * row["forward_median_s"]
    timings[f"train_ms_{strategy}_s{s:g}"] = 1e3 * row["train_median_s"]
run.log_timings({key: round(float(value), 4) for key, value in timings.items()})
{key: value for key, value in timings.items() if "_ms_" not in key}
