# %% [markdown]
# # 49 · POLCA — sensitivity to the power model, and training's headroom
# (a) The headroom depends on the power model's constants: for each (u_decode, gamma) of the
# table, POLCA at `sensitivity_oversub` must keep 0 brake events and the high-priority p99 TTFT
# within +5% of unlimited power (the reference does not depend on the power constants: it is
# run once). (b) Training: synchronous compute (0.95 TDP, slows 1/f under a cap) / communication
# (0.6 TDP) phases over the whole row, under the same thresholds, brake and budget; its
# headroom = the largest oversubscription with 0 brakes and <= 5% throughput loss.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"train_period_s": 4.0}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p49

# %%
from shared import notebook

run = notebook.start("49", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd

from paper49 import power as P
from paper49 import row as R

control = R.control_from(p)
base = R.azure_superimposed()
x = p.sensitivity_oversub
kw = dict(rate_per_server=p.rate_per_server, duration_s=p.duration_s, trough=p.trough, cycles=p.cycles,
          low_share=p.low_share, max_prompt=p.max_prompt, seed=run.seed)
reference = R.run_point(R.row_from(p), base, p.n0_servers, x, "unlimited", control, **kw)
cells = []
for u_decode, gamma in run.progress([(u, g) for u in p.sensitivity_u_decode for g in p.sensitivity_gamma], desc="sensitivity"):
    row = R.row_from(p, u_decode=u_decode, gamma=gamma)
    s = R.summarise(R.run_point(row, base, p.n0_servers, x, "polca", control, **kw), reference)
    cells.append({"u_decode": u_decode, "gamma": gamma, **s,
                  "passes": bool(s["brakes"] == 0 and s["hp_ttft_p99_increase"] <= p.max_hp_increase)})
cells = pd.DataFrame(cells)
run.save_table(cells, "sensitivity")
run.log_metrics({"sensitivity_share_pass": round(float(cells["passes"].mean()), 4),
                 "sensitivity_cells": len(cells),
                 "sensitivity_max_hp_ttft_p99_increase": round(float(cells["hp_ttft_p99_increase"].max()), 4)})
cells.pivot(index="u_decode", columns="gamma", values="hp_ttft_p99_increase").round(3)

# %%
row = R.row_from(p)
profile = P.TrainingProfile(p.train_compute_frac, p.train_comm_frac, p.train_period_s, p.train_compute_share)
budget = p.n0_servers * row.server_peak_w()
train, series = [], {}
for xt in p.train_oversub_grid:
    n = R.servers_for(p.n0_servers, xt)
    res = {}
    for policy in ("unlimited", "polca"):
        res[policy] = P.training_row(n, p.gpus_per_server, row.power, profile, P.Controller(policy, control), budget,
                                     p.other_w, p.train_duration_s, p.tick_s, p.train_dt_s, p.train_jobs, run.seed)
    series[xt] = res
    for policy, r in res.items():
        train.append({"oversub_pct": round(100 * xt), "policy": policy, "n_servers": n, "brakes": r["brakes"],
                      "violations": r["violations"], "power_peak_frac": float(r["watts"].max() / budget),
                      "power_mean_frac": float(r["watts"].mean() / budget),
                      "slowdown": 1 - r["work"] / res["unlimited"]["work"]})
train = pd.DataFrame(train)
run.save_table(train, "training")
headroom = R.max_oversub(train, "polca", p.train_max_slowdown, "slowdown")
metrics = {"training_max_oversub_pct": headroom,
           "training_brake_free_oversub_pct": R.max_oversub(train, "polca", column="slowdown"),
           "training_peak_power_frac_no_oversub": round(float(train[(train["policy"] == "unlimited")
                                                                     & (train["oversub_pct"] == 0)]["power_peak_frac"].iloc[0]), 4)}
try:  # the inference headroom of notebook 02
    inf = run.load_table("oversubscription")
    metrics["inference_minus_training_headroom_pct"] = R.max_oversub(inf, "polca", p.max_hp_increase) - headroom
    metrics["inference_minus_training_brake_free_pct"] = (R.max_oversub(inf, "polca")
                                                          - metrics["training_brake_free_oversub_pct"])
except FileNotFoundError:
    pass
run.log_metrics(metrics)
train.round(3)

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
piv = cells.pivot(index="u_decode", columns="gamma", values="hp_ttft_p99_increase")
sns.heatmap(100 * piv, annot=True, fmt=".1f", cmap="rocket_r", ax=axes[0], cbar_kws={"label": "hp p99 TTFT increase (%)"})
axes[0].set(title=f"POLCA at +{x:.0%}: high-priority p99 TTFT increase (%)")
show = [v for v in p.train_oversub_grid if v > 0][:1] or p.train_oversub_grid[:1]
w = series[show[0]]["polca"]["watts"] / budget
axes[1].plot((pd.RangeIndex(len(w)) + 1) * p.tick_s, w, lw=0.9, c="C3")
for y, ls in ((1.0, "-"), (p.t2, "--")):
    axes[1].axhline(y, c="k", lw=0.7, ls=ls)
axes[1].set(xlim=(0, min(30, p.train_duration_s)), xlabel="time (s)", ylabel="row power / budget",
            title=f"training row at +{show[0]:.0%} under POLCA's rules")
fig.tight_layout()
run.save_figure(fig, "sensitivity_training")
