# %% [markdown]
# # 37 · Fuyou — overlapped vs sequential out-of-core steps, and the cost model
# Step time of the two schedules with every chunk's optimizer state on the SSD tier, over a
# sweep of emulated disk bandwidths (multiples of the *balance* bandwidth, where a step's
# I/O + Adam time equals its backward time), next to the cost model's prediction from a
# profile of in-memory steps. Then the swap plan: under a memory budget for resident state,
# the cost model picks which chunks stay in memory; we measure its plan against simple ones.
# Feeds the claims overlap-*, cost-model-*, tflops-vs-zero-infinity and gpu-175b.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"bandwidth_factors": [0.5, 1.0]}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p37

# %%
from shared import notebook

run = notebook.start("37", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper37 import costmodel, experiment, ssd

torch.set_num_threads(p.num_threads)
spec, model, batches = experiment.model_and_batches(p, run.artifact("corpus"), run.seed, run.device)
folder = p.ssd_dir or run.out_dir
real_rate = ssd.measure_real_rate(folder)
prof = costmodel.profile(model, batches, p.train, folder, real_rate, steps=p.profile_steps)
balance = experiment.balance_bandwidth(prof, p.latency_ms)
bandwidths = [f * balance for f in p.bandwidth_factors] if p.throttle else [None]
print(f"real file rate {real_rate / 1e9:.2f} GB/s; balance bandwidth {balance:.0f} MB/s; "
      f"profile: forward {prof.forward_s * 1e3:.1f} ms, backward {prof.backward_s * 1e3:.1f} ms, Adam {sum(prof.adam_s) * 1e3:.1f} ms")

# %%
sweep = experiment.sweep(model, batches, p.train, folder, real_rate, bandwidths=bandwidths, latency_ms=p.latency_ms,
                         prefetch=p.prefetch, steps=p.timed_steps, warmup=p.warmup_steps, progress=run.progress)
sweep["factor"] = sweep["bandwidth_mb_s"] / balance if p.throttle else float("nan")
run.save_table(sweep, "bandwidth_sweep")
ratios = (sweep[sweep.schedule == "overlapped"]["measured_s"].to_numpy()
          / sweep[sweep.schedule == "sequential"]["measured_s"].to_numpy())
at_balance = min(range(len(bandwidths)), key=lambda i: abs(p.bandwidth_factors[i] - 1.0)) if p.throttle else 0
sweep.round(4)

# %%
import matplotlib.pyplot as plt
import seaborn as sns

plot = sweep.assign(disk_mb_s=sweep["bandwidth_mb_s"].fillna(real_rate / 1e6))  # no throttle: the real rate
fig, ax = plt.subplots(figsize=(6.5, 4))
sns.lineplot(data=plot, x="disk_mb_s", y="measured_s", hue="schedule", marker="o", ax=ax)
sns.lineplot(data=plot, x="disk_mb_s", y="predicted_s", hue="schedule", marker="x", linestyle="--", legend=False, ax=ax)
ax.plot([], [], linestyle="--", marker="x", color="grey", label="cost model (dashed)")
ax.axvline(balance, color="black", linewidth=0.8, linestyle=":")
ax.set(xscale="log", xlabel=f"{'emulated' if p.throttle else 'real'} disk bandwidth (MB/s; dotted: I/O + Adam = backward)",
       ylabel="step time (s)", title=f"{spec.n_layers}-layer model, all optimizer state on the SSD tier")
ax.legend()
fig.tight_layout()
run.save_figure(fig, "fig1_step_time_vs_bandwidth")

# %% [markdown]
# ## The swap plan
# With `resident_budget` of the optimizer state allowed in memory, which chunks should stay?
# The cost model replays the overlapped schedule for every resident set that fits and picks
# the fastest; we measure it against swapping everything and two fill-in-order heuristics.

# %%
plan_bw = p.plan_factor * balance if p.throttle else None
plan_prof = costmodel.profile(model, batches, p.train, folder, real_rate, steps=p.profile_steps)
disk_model = costmodel.DiskModel(plan_bw, p.latency_ms, real_rate)
budget = p.resident_budget * sum(plan_prof.state_bytes)
plans = experiment.compare_plans(model, batches, p.train, folder, plan_prof, disk_model, budget, prefetch=p.prefetch,
                                 steps=p.timed_steps, warmup=p.warmup_steps, progress=run.progress)
run.save_table(plans, "swap_plans")
plans.round(4)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
long = plans.rename(columns={"measured_s": "measured", "predicted_s": "cost model"}).melt(
    id_vars="plan", value_vars=["measured", "cost model"], var_name="", value_name="step time (s)")
sns.barplot(data=long, y="plan", x="step time (s)", hue="", ax=ax)
ax.set(title=f"swap plans at {plan_bw or real_rate / 1e6:.0f} MB/s, {p.resident_budget:.0%} of the state resident")
fig.tight_layout()
run.save_figure(fig, "fig2_swap_plans")

# %%
over = sweep[sweep.schedule == "overlapped"].reset_index(drop=True)
seq = sweep[sweep.schedule == "sequential"].reset_index(drop=True)
tokens = p.train.batch_size * p.train.seq_len
n_params = sum(t.numel() for t in model.parameters())
timings = {
    "balance_bandwidth_mb_s": balance,
    "real_file_rate_gb_s": real_rate / 1e9,
    "step_ratio_at_balance": float(ratios[at_balance]),
    "speedup_at_balance": float(1 / ratios[at_balance]),
    "step_ratio_max": float(ratios.max()),
    "step_ratio_min": float(ratios.min()),
    "model_error_median": float(sweep["model_error"].median()),
    "model_error_max": float(sweep["model_error"].max()),
    "plan_regret": float(plans.loc[plans.chosen, "measured_s"].iloc[0] / plans["measured_s"].min() - 1),
    "plan_chosen": plans.loc[plans.chosen, "resident"].iloc[0],
    "gpu_tflops_overlapped": (6 * n_params * tokens / over["measured_s"].iloc[at_balance] / 1e12
                              if run.device.startswith("cuda") else None),
}
run.log_timings(timings)
run.log_metrics({"resident_budget_bytes": int(budget), "n_bandwidths": len(bandwidths)})
timings
