# %% [markdown]
# # 43 · P/D-Serve — P/D ratios: per-scenario groups vs one global ratio vs aggregated
# Llama-2-7B on a servesim roofline; the workload mixes the Azure code trace (long prompts, short
# outputs) and the conv trace. The same total instances serve it as (i) one mixed disaggregated
# pool at every fixed P/D split, (ii) one group per scenario, each split by its throughput-matched
# ratio (paper43.pdserve.matched_ratio) and sized by its demand, (iii) aggregated instances with
# mixed iterations (servesim as is). The KV transfer uses the α-β fit of notebook 01. Throughput
# at SLO = the best goodput (requests meeting TTFT and the strict TPOT SLO, per second) over the
# loads. Feeds per-scenario-ratio and disaggregated-vs-aggregated.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_instances": 8}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p43

# %%
from shared import notebook

run = notebook.start("43", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import numpy as np
import pandas as pd

from paper43 import pdserve as D
from shared import servesim as S

step = S.StepModel(S.LLAMA2_7B, S.DEVICES[p.device])
kv = step.kv_capacity_tokens()
agg_cfg = S.EngineConfig(kv_tokens=kv, max_new_tokens=p.max_output)
pre_cfg = S.EngineConfig(kv_tokens=kv, max_new_tokens=p.max_output)
dec_cfg = S.EngineConfig(kv_tokens=kv, max_new_tokens=p.max_output, max_prefill_tokens=kv)
fit = run.load_table("kv_transfer_fit").iloc[0]
transfer = D.Transfer(float(fit["alpha_s"]), float(fit["beta_Bps"]), contiguous=p.transfer_layout == "contiguous")
slo = S.SLO(ttft_s=p.ttft_slo_s, tpot_s=p.tpot_slo_s)

# demands and ratios from a large sample of each scenario (rate irrelevant)
probe, probe_code = D.mixed_trace(20000, 1.0, 10_000, p.code_share, p.max_prompt, p.max_output)
dem = {"code": D.demand(D.subset(probe, probe_code), step, dec_cfg, p.tpot_slo_s),
       "conv": D.demand(D.subset(probe, ~probe_code), step, dec_cfg, p.tpot_slo_s),
       "mixed": D.demand(probe, step, dec_cfg, p.tpot_slo_s)}
capacity = p.n_instances / (p.code_share * dem["code"].total_s + (1 - p.code_share) * dem["conv"].total_s)
groups = D.allocate(p.n_instances, [p.code_share * dem["code"].total_s, (1 - p.code_share) * dem["conv"].total_s])
splits = {kind: D.split(n, dem[kind].ratio) for kind, n in zip(("code", "conv"), groups)}
run.save_table(pd.DataFrame([{"scenario": k, **vars(v), "instances": groups[i] if i < 2 else p.n_instances,
                              "n_p": splits[k][0] if k in splits else None}
                             for i, (k, v) in enumerate(dem.items())]), "demand")
run.log_metrics({"capacity_rps": round(capacity, 4), "ratio_code": round(dem["code"].ratio, 4),
                 "ratio_conv": round(dem["conv"].ratio, 4), "ratio_mixed": round(dem["mixed"].ratio, 4),
                 "code_n_p": splits["code"][0], "code_n_d": splits["code"][1],
                 "conv_n_p": splits["conv"][0], "conv_n_d": splits["conv"][1]})
{k: vars(v) for k, v in dem.items()}, splits

# %%
rows = []
jobs = [(seed, load) for seed in p.seeds for load in p.loads]
for seed, load in run.progress(jobs, desc="seeds x loads"):
    trace, is_code = D.mixed_trace(p.n_requests, load * capacity, seed, p.code_share, p.max_prompt, p.max_output)
    base = {"seed": seed, "load": load, "rate_rps": load * capacity}

    def record(config, n_p, ok, span, preempt):
        rows.append({**base, "config": config, "n_p": n_p, "attainment": float(ok.mean()),
                     "goodput_rps": float(ok.sum()) / span, "preemptions": int(preempt)})

    for n_p in range(1, p.n_instances):
        d = D.simulate_disaggregated(trace, step, n_p, p.n_instances - n_p, pre_cfg, dec_cfg, transfer)
        r = d.result
        record("global", n_p, r.meets(slo), float(r.finish_s.max() - trace.arrival_s.min()), r.preemptions.sum())
    ok, finish, preempt = np.zeros(len(trace), bool), np.zeros(len(trace)), 0
    for kind, mask in (("code", is_code), ("conv", ~is_code)):
        n_p, n_d = splits[kind]
        r = D.simulate_disaggregated(D.subset(trace, mask), step, n_p, n_d, pre_cfg, dec_cfg, transfer).result
        ok[mask], finish[mask], preempt = r.meets(slo), r.finish_s, preempt + r.preemptions.sum()
    record("per-scenario", splits["code"][0] + splits["conv"][0], ok, float(finish.max() - trace.arrival_s.min()),
           preempt)
    r = D.simulate_aggregated(trace, step, p.n_instances, agg_cfg)
    record("aggregated", 0, r.meets(slo), float(r.finish_s.max() - trace.arrival_s.min()), r.preemptions.sum())
table = pd.DataFrame(rows)
run.save_table(table, "pd_ratio_runs")

# %%
mean = table.groupby(["config", "n_p", "load"], as_index=False)[["attainment", "goodput_rps"]].mean()
best = mean.groupby(["config", "n_p"], as_index=False)["goodput_rps"].max()
run.save_table(best, "throughput_at_slo")
glob = best[best["config"] == "global"]
best_global = glob.loc[glob["goodput_rps"].idxmax()]
per = float(best.loc[best["config"] == "per-scenario", "goodput_rps"].iloc[0])
agg = float(best.loc[best["config"] == "aggregated", "goodput_rps"].iloc[0])
disagg = max(per, float(best_global["goodput_rps"]))
run.log_metrics({
    "best_global_n_p": int(best_global["n_p"]),
    "goodput_best_global_rps": round(float(best_global["goodput_rps"]), 4),
    "goodput_per_scenario_rps": round(per, 4),
    "goodput_aggregated_rps": round(agg, 4),
    "per_scenario_over_global": round(per / float(best_global["goodput_rps"]), 4),
    "disaggregated_over_aggregated": round(disagg / agg, 4) if agg > 0 else 1e9,
})  # fmt: skip
best

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(glob["n_p"], glob["goodput_rps"], "o-", label="one mixed pool, fixed n_p")
ax.axhline(per, color="C1", ls="--", label=f"per-scenario groups (code {splits['code']}, conv {splits['conv']})")
ax.axhline(agg, color="C2", ls=":", label="aggregated (mixed iterations)")
ax.set(xlabel=f"prefill instances n_p of {p.n_instances} (rest decode)", ylabel="throughput at SLO (req/s, best load)",
       title=f"TTFT <= {p.ttft_slo_s:g} s, TPOT <= {p.tpot_slo_s * 1e3:g} ms, Llama-2-7B / {p.device}")
ax.legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig2_pd_ratio")
