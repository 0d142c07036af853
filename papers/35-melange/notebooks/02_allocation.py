# %% [markdown]
# # 35 · Mélange — the ILP against every single GPU type
# Workloads (Arena-like short, PubMed-like long, their 80/20 mix; Azure conv/code at cpu scale) as
# shares of the profile buckets; for every rate and SLO, the cheapest allocation (paper35.solver,
# HiGHS via scipy.optimize.milp) with every GPU type allowed (Mélange) and with one type only.
# Feeds melange-never-worse, up-to-77-short-low-rate, saving-vs-best-single, long-saves-less,
# fast-gpus-at-tight-slo.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"slice_factor": 8}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p35

# %%
from shared import notebook

run = notebook.start("35", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import numpy as np
import pandas as pd

from paper35 import gpus, solver, workloads

profiles, inst = run.load_table("profiles"), run.load_table("instances")
shares = {}
for w in p.workloads:
    prompt, output = workloads.sample(w, p.n_samples, run.seed, tuple(p.short), tuple(p.long), p.mixed_long_share)
    shares[w] = workloads.bucket_shares(prompt, output, p.input_edges, p.output_edges)
run.save_table(pd.DataFrame([{"workload": w, "bucket": b, "share": s} for w, v in shares.items() for b, s in enumerate(v)]),
               "bucket_shares")
start, tables = time.perf_counter(), []
for model in p.models:
    mine = inst[inst["model"] == model]
    costs = dict(zip(mine["instance"], mine["usd_per_hour"]))
    t = solver.sweep(profiles[profiles["model"] == model], costs, shares, p.rates, p.slice_factor, progress=run.progress)
    tables.append(t.rename(columns=lambda c: c.replace(f"n_{model}/", "n_")).assign(model=model))
solve_s = time.perf_counter() - start
alloc = pd.concat(tables, ignore_index=True)
alloc["policy"] = alloc["policy"].str.split("/").str[-1]
run.save_table(alloc, "allocations")
sav = pd.concat([solver.savings(g).assign(model=m) for m, g in alloc.groupby("model")], ignore_index=True)
run.save_table(sav, "savings")
sav[sav["model"] == "llama2-7b"].round(3)

# %%
inst_price = {i.split("/", 1)[1] + "@" + m: c for i, m, c in zip(inst["instance"], inst["model"], inst["usd_per_hour"])}
mix = alloc[(alloc["policy"] == "melange") & np.isfinite(alloc["cost"])]
cols = [c for c in mix.columns if c.startswith("n_")]
spend = mix.melt(id_vars=["model", "workload", "slo_ms", "rate"], value_vars=cols, var_name="instance", value_name="n")
spend["instance"] = spend["instance"].str[2:]
spend["usd"] = spend["n"] * [inst_price.get(f"{i}@{m}", 0.0) for i, m in zip(spend["instance"], spend["model"])]
spend["gpu"] = spend["instance"].str.split("x").str[-1]
run.save_table(spend, "melange_spend")


def fast_share(slo):
    g = spend[spend["slo_ms"] == slo]
    return float(g.loc[g["gpu"].isin(gpus.FAST), "usd"].sum() / g["usd"].sum())


s7 = sav[sav["model"] == "llama2-7b"]
by_w = s7.groupby("workload")
short_low = s7[(s7["workload"] == "short") & (s7["rate"] <= p.low_rate)]
slo_tight, slo_loose = min(p.slos_ms), max(p.slos_ms)
metrics = {
    "melange_over_best_single_max": round(float((sav["melange_cost"] / sav["best_single_cost"]).max()), 4),
    "short_low_rate_max_saving": round(float(short_low["saving_vs_worst"].max()), 4),
    "short_minus_long_max_saving": round(float(by_w["saving_vs_worst"].max()["short"] - by_w["saving_vs_worst"].max()["long"]), 4),
    "fast_share_40_minus_120": round(fast_share(slo_tight) - fast_share(slo_loose), 4),
    "fast_share_tight": round(fast_share(slo_tight), 4),
    "fast_share_loose": round(fast_share(slo_loose), 4),
}
for w, g in by_w:
    metrics[f"{w}_max_saving_vs_best"] = round(float(g["saving_vs_best"].max()), 4)
    metrics[f"{w}_max_saving_vs_worst"] = round(float(g["saving_vs_worst"].max()), 4)
run.log_metrics(metrics)
run.log_timings({"ilp_s": solve_s, "ilp_solves": len(alloc), "ilp_ms_per_solve": 1e3 * solve_s / len(alloc)})
metrics

# %%
import matplotlib.pyplot as plt
import seaborn as sns

a7 = alloc[(alloc["model"] == "llama2-7b") & np.isfinite(alloc["cost"])]
grid = sns.relplot(data=a7, x="rate", y="cost", hue="policy", style="policy", col="workload", row="slo_ms",
                   kind="line", markers=True, height=2.6, aspect=1.2, facet_kws={"sharey": False})
grid.set(xscale="log", yscale="log", xlabel="request rate (req/s)", ylabel="USD per hour")
grid.figure.suptitle("Llama-2-7B: Mélange vs each single GPU type (simulated profiles)", y=1.02)
run.save_figure(grid.figure, "fig1_cost_vs_rate")

# %%
share = spend.groupby(["model", "workload", "slo_ms", "gpu"])["usd"].sum().unstack("gpu").fillna(0)
share = share.div(share.sum(axis=1), axis=0)
fig, axes = plt.subplots(1, len(p.models), figsize=(5 * len(p.models), 3.6), squeeze=False)
for ax, (m, g) in zip(axes[0], share.groupby(level="model")):
    g.droplevel("model").plot.bar(stacked=True, ax=ax, width=0.8)
    ax.set(title=f"{m}: Mélange's GPU mix (share of cost, all rates)", xlabel="workload, TPOT SLO (ms)", ylabel="share of USD/h")
    ax.legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig2_gpu_mix_per_slo")
