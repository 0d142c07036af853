# %% [markdown]
# # 49 · POLCA — oversubscribing a row of inference servers
# A row provisioned for `n0_servers` at peak (8 x TDP each) gets +x% servers serving +x% load
# (Azure conv + code, compressed, diurnal). Policies: `unlimited` (no budget: the latency
# reference), `none` (no controller, only the power brake), `polca` (T1 caps low priority, T2
# caps all, hysteresis, brake as failsafe; in-band clock locking acts from the next tick) and
# `capping` (one threshold, every server, 3-s actuation). Per point: brake events, budget
# violations, high/low-priority p99 TTFT against `unlimited`.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n0_servers": 10}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p49

# %%
from shared import notebook

run = notebook.start("49", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import numpy as np
import pandas as pd

from paper49 import row as R

row = R.row_from(p)
control = R.control_from(p)
base = R.azure_superimposed()
policies = ["unlimited", "none", "polca", "capping"]
start = time.perf_counter()
table, outs = R.sweep(row, base, p, p.oversub_grid, policies, control, run.seed, progress=run.progress)
wall = time.perf_counter() - start
run.save_table(table, "oversubscription")
simulated = int(table["requests"].sum())  # every (point, policy) row is one simulation of its requests
run.log_timings({"sweep_wall_s": round(wall, 2), "sweep_requests_per_s": round(simulated / wall, 1)})


def at(policy, key, x=p.claim_oversub):
    return table[(table["policy"] == policy) & (table["oversub_pct"] == round(100 * x))][key].iloc[0]


run.log_metrics({
    "polca_max_oversub_pct": R.max_oversub(table, "polca", p.max_hp_increase),
    "capping_max_oversub_pct": R.max_oversub(table, "capping", p.max_hp_increase),
    "nocontrol_max_oversub_pct": R.max_oversub(table, "none", p.max_hp_increase),
    "polca_brake_free_oversub_pct": R.max_oversub(table, "polca"),
    "capping_brake_free_oversub_pct": R.max_oversub(table, "capping"),
    "nocontrol_brake_free_oversub_pct": R.max_oversub(table, "none"),
    "polca_hp_ttft_p50_increase_at_claim": round(float(at("polca", "hp_ttft_p50_increase")), 4),
    "polca_brakes_at_claim": int(at("polca", "brakes")),
    "polca_hp_ttft_p99_increase_at_claim": round(float(at("polca", "hp_ttft_p99_increase")), 4),
    "polca_lp_ttft_p99_increase_at_claim": round(float(at("polca", "lp_ttft_p99_increase")), 4),
    "nocontrol_brakes_at_claim": int(at("none", "brakes")),
    "nocontrol_hp_ttft_p99_increase_at_claim": round(float(at("none", "hp_ttft_p99_increase")), 4),
    "capping_violations_at_claim": int(at("capping", "violations")),
    "capping_hp_ttft_p99_increase_at_claim": round(float(at("capping", "hp_ttft_p99_increase")), 4),
    "row_peak_power_frac_no_oversub": round(float(at("unlimited", "power_peak_frac", min(p.oversub_grid))), 4),
    "row_mean_power_frac_no_oversub": round(float(at("unlimited", "power_mean_frac", min(p.oversub_grid))), 4),
    "requests_at_claim": int(at("polca", "requests")),
})
table.round(3)

# %%
series = []
for policy in policies:
    out = outs[(p.claim_oversub, policy)]
    series.append(pd.DataFrame({"policy": policy, "t_s": (np.arange(len(out["watts"])) + 1) * p.tick_s,
                                "power_frac": out["watts"] / out["budget_w"], "f_low": out["f_low"], "f_high": out["f_high"]}))
series = pd.concat(series, ignore_index=True)
run.save_table(series, "power_series_at_claim")

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, axes = plt.subplots(len(policies), 1, figsize=(10, 2.1 * len(policies)), sharex=True, sharey=True)
for ax, policy in zip(axes, policies):
    g = series[series["policy"] == policy]
    ax.plot(g["t_s"], g["power_frac"], lw=0.9, label="row power / budget")
    ax.fill_between(g["t_s"], 0, 1.3, where=g["f_high"] < 1, step="pre", color="C3", alpha=0.15, label="all servers capped")
    ax.fill_between(g["t_s"], 0, 1.3, where=(g["f_low"] < 1) & (g["f_high"] >= 1), step="pre", color="C1", alpha=0.15,
                    label="low priority capped")
    for y, ls in ((1.0, "-"), (p.t1, ":"), (p.t2, "--")):
        ax.axhline(y, c="k", lw=0.7, ls=ls)
    r = table[(table["policy"] == policy) & (table["oversub_pct"] == round(100 * p.claim_oversub))].iloc[0]
    ax.set(ylabel="power / budget", ylim=(0.2, 1.3),
           title=f"{policy}: {int(r['brakes'])} brake events, high-priority p99 TTFT {r['hp_ttft_p99_increase']:+.1%}")
axes[0].legend(loc="lower right", ncols=3, fontsize=8)
axes[-1].set_xlabel(f"time (s), +{p.claim_oversub:.0%} servers ({int(r['n_servers'])} for a budget of {p.n0_servers})")
fig.tight_layout()
run.save_figure(fig, "power_over_time")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
sns.lineplot(table, x="oversub_pct", y="hp_ttft_p99_s", hue="policy", hue_order=policies, marker="o", ax=axes[0])
axes[0].set(xlabel="extra servers (%)", ylabel="high-priority p99 TTFT (s)", title="latency vs oversubscription")
sns.lineplot(table, x="oversub_pct", y="brakes", hue="policy", hue_order=policies, marker="o", ax=axes[1], legend=False)
axes[1].set(xlabel="extra servers (%)", ylabel="power-brake events", title="brake events vs oversubscription")
fig.tight_layout()
run.save_figure(fig, "ttft_vs_oversubscription")
