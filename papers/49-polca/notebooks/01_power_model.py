# %% [markdown]
# # 49 · POLCA — the power model of inference and training
# One server (8 GPUs, one tensor-parallel Llama-2-70B instance, H100 roofline) serves the Azure
# conv + code requests at its diurnal peak rate (shared.servesim, `record_steps=True`); every
# iteration's GPU power follows the notes' model P = P_idle + (TDP - P_idle)·u·f^γ with u from
# the roofline's compute share of the batch (power.py). Prefill iterations run near TDP, decode
# lower, idle at P_idle; a clock cap slows prefill ~1/f and decode much less. The training
# profile (compute near TDP, communication lower) is shown for contrast. These are the model's
# inputs made visible, not findings.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"u_decode": 0.4}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p49

# %%
from shared import notebook

run = notebook.start("49", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import numpy as np
import pandas as pd

from paper49 import power as P
from paper49 import row as R
from shared import servesim as S

row = R.row_from(p)
base = R.azure_superimposed()
trace, _ = R.row_trace(base, p.rate_per_server, p.duration_s, 1.0, 1.0, 0.5, p.max_prompt, run.seed)  # flat at the peak
result = S.simulate(trace, row.step, row.engine, S.Aggressive(), record_steps=True)
st = result.steps
u = row.power.activity(row.step, st["prefill_tokens"] + st["decode_seqs"], st["kv_tokens"])
frac = row.power.watts(u) / row.power.tdp_w
prefill = st["prefill_tokens"] > 0
busy = float(st["dt"].sum()) / float(result.finish_s.max() - trace.arrival_s.min())
phases = pd.DataFrame({
    "phase": ["prefill (iterations with a prompt)", "decode only", "idle"],
    "iterations": [int(prefill.sum()), int((~prefill).sum()), 0],
    "time_share": [float(st["dt"][prefill].sum()) / float(st["dt"].sum()) * busy,
                   float(st["dt"][~prefill].sum()) / float(st["dt"].sum()) * busy, 1 - busy],
    "power_frac_tdp": [float(np.average(frac[prefill], weights=st["dt"][prefill])),
                       float(np.average(frac[~prefill], weights=st["dt"][~prefill])), p.idle_frac]})
run.save_table(phases, "phase_power")

# the cap's effect on one prefill (1,024-token prompt) and one decode step (batch 32 over 1,024 tokens each)
caps = []
for f in sorted({1.0, p.f_low, p.f_all, p.brake_f}, reverse=True):
    s = P.capped(row.step, f, p.beta)
    caps.append({"f": f, "prefill_slowdown": float(s.seconds(1024, 1024 * 1025 // 2, 0, 0) / row.step.seconds(1024, 1024 * 1025 // 2, 0, 0)),
                 "decode_slowdown": float(s.seconds(0, 0, 32, 32 * 1024) / row.step.seconds(0, 0, 32, 32 * 1024)),
                 "prefill_power_frac_tdp": float(row.power.watts(1.0 * p.u_prefill, f) / row.power.tdp_w),
                 "decode_power_frac_tdp": float(row.power.watts(row.power.activity(row.step, 32, 32 * 1024), f) / row.power.tdp_w)})
caps = pd.DataFrame(caps)
run.save_table(caps, "cap_effects")
at = caps[caps["f"] == p.f_all].iloc[0]
run.log_metrics({
    "prefill_power_frac_tdp": round(phases["power_frac_tdp"][0], 4),
    "decode_power_frac_tdp": round(phases["power_frac_tdp"][1], 4),
    "decode_prefill_power_ratio": round(phases["power_frac_tdp"][1] / phases["power_frac_tdp"][0], 4),
    "server_busy_share_at_peak": round(busy, 4),
    "server_mean_power_frac_tdp": round(float((phases["time_share"] * phases["power_frac_tdp"]).sum()), 4),
    "prefill_slowdown_at_f_all": round(float(at["prefill_slowdown"]), 4),
    "decode_slowdown_at_f_all": round(float(at["decode_slowdown"]), 4),
})
pd.concat([phases.round(3), caps.round(3)], keys=["phases", "caps"])

# %%
import matplotlib.pyplot as plt

prof = P.TrainingProfile(p.train_compute_frac, p.train_comm_frac, p.train_period_s, p.train_compute_share)
tt = np.arange(0, 4 * p.train_period_s, p.train_dt_s)
train_frac = np.where(tt % p.train_period_s < p.train_compute_share * p.train_period_s, prof.compute_frac, prof.comm_frac)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
window = (st["t"] >= st["t"][0] + 5) & (st["t"] < st["t"][0] + 10)
t0 = st["t"][window][0]
axes[0].step(st["t"][window] - t0, frac[window], where="post", lw=0.8)
axes[0].axhline(1.0, ls=":", c="k", lw=0.8)
axes[0].set(xlabel="time (s)", ylabel="GPU power / TDP", title=f"inference: one server, {p.rate_per_server:g} req/s (iterations)")
axes[1].step(tt, train_frac, where="post", lw=1.0, c="C3")
axes[1].axhline(1.0, ls=":", c="k", lw=0.8)
axes[1].set(xlabel="time (s)", title="training: compute / communication phases")
axes[0].set_ylim(0, 1.05)
fig.tight_layout()
run.save_figure(fig, "power_phases")
