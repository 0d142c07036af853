# %% [markdown]
# # 43 · P/D-Serve — P/D ratios: per-scenario groups vs one global ratio vs aggregated
# Llama-2-7B on a servesim roofline; the workload mixes the Azure code trace (long prompts, short
# outputs) and the conv trace. The same total instances serve it as (i) one mixed disaggregated
# pool at every fixed P/D split, (ii) one group per scenario, each split by its throughput-matched
# ratio (paper43.pdserve.matched_ratio) and sized by its demand, (iii) aggregated instances with
# prefill-only iterations (`mixed=False`, the paper's baseline), and as an extra with mixed
# iterations. The simulated KV link is a parameter (RDMA at `link_gbps`), so these metrics are
# deterministic; notebook 01's host-copy timings stay a timing claim of their own. Throughput at
# SLO = the highest arrival rate at which >= `slo_target` of the requests meet TTFT and the strict
# TPOT SLO (paper43.pdserve.max_rate, bisection). Feeds per-scenario-ratio and
# disaggregated-vs-aggregated.

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
pre_cfg = S.EngineConfig(kv_tokens=kv, max_new_tokens=p.max_output)
dec_cfg = S.EngineConfig(kv_tokens=kv, max_new_tokens=p.max_output, max_prefill_tokens=kv)
transfer = D.link(p.link_gbps, p.link_alpha_s, p.kv_block_tokens, contiguous=p.transfer_layout == "contiguous")
slo = S.SLO(ttft_s=p.ttft_slo_s, tpot_s=p.tpot_slo_s)

# demands and ratios from a large sample of each scenario (rate irrelevant)
probe, probe_code = D.mixed_trace(20000, 1.0, 10_000, p.code_share, p.max_prompt, p.max_output)
dem = {"code": D.demand(D.subset(probe, probe_code), step, dec_cfg, p.tpot_slo_s),
       "conv": D.demand(D.subset(probe, ~probe_code), step, dec_cfg, p.tpot_slo_s),
       "mixed": D.demand(probe, step, dec_cfg, p.tpot_slo_s)}
capacity = p.n_instances / (p.code_share * dem["code"].total_s + (1 - p.code_share) * dem["conv"].total_s)
groups = D.allocate(p.n_instances, [p.code_share * dem["code"].total_s, (1 - p.code_share) * dem["conv"].total_s])
splits = {kind: D.split(n, dem[kind].ratio) for kind, n in zip(("code", "conv"), groups)}
setup = D.Setup(step, p.n_instances, splits, pre_cfg, dec_cfg, S.EngineConfig(kv_tokens=kv, max_new_tokens=p.max_output,
                                                                              mixed=False), transfer, slo)
run.save_table(pd.DataFrame([{"scenario": k, **vars(v), "instances": groups[i] if i < 2 else p.n_instances,
                              "n_p": splits[k][0] if k in splits else None}
                             for i, (k, v) in enumerate(dem.items())]), "demand")
run.log_metrics({"capacity_rps": round(capacity, 4), "ratio_code": round(dem["code"].ratio, 4),
                 "ratio_conv": round(dem["conv"].ratio, 4), "ratio_mixed": round(dem["mixed"].ratio, 4),
                 "code_n_p": splits["code"][0], "code_n_d": splits["code"][1],
                 "conv_n_p": splits["conv"][0], "conv_n_d": splits["conv"][1],
                 "sim_transfer_1k_tokens_ms": round(float(transfer.seconds(1024, step.shape)) * 1e3, 4)})
{k: vars(v) for k, v in dem.items()}, splits

# %%
rows, best = [], []
configs = [("global", n_p) for n_p in range(1, p.n_instances)] + [(c, 0) for c in D.CONFIGS[1:]]
for config, n_p in run.progress(configs, desc="configs"):
    def attainment(rate, config=config, n_p=n_p):
        per_seed = []
        for seed in p.seeds:
            trace, is_code = D.mixed_trace(p.n_requests, rate, seed, p.code_share, p.max_prompt, p.max_output)
            ok, preempt = D.serve(config, n_p, trace, is_code, setup)
            per_seed.append(ok.mean())
            rows.append({"config": config, "n_p": n_p, "seed": seed, "rate_rps": rate, "load": rate / capacity,
                         "attainment": float(ok.mean()), "preemptions": preempt})
        return float(np.mean(per_seed))

    rate, _ = D.max_rate(attainment, p.rate_bounds[0] * capacity, p.rate_bounds[1] * capacity, p.slo_target,
                         p.rate_steps)
    best.append({"config": config, "n_p": n_p, "rate_at_slo_rps": rate, "load_at_slo": rate / capacity})
run.save_table(pd.DataFrame(rows), "pd_ratio_runs")
best = pd.DataFrame(best)
run.save_table(best, "throughput_at_slo")

# %%
glob = best[best["config"] == "global"]
best_global = glob.loc[glob["rate_at_slo_rps"].idxmax()]
at = best.set_index("config")["rate_at_slo_rps"]
per, agg, agg_mixed = float(at["per-scenario"]), float(at["aggregated"]), float(at["aggregated-mixed"])
g = float(best_global["rate_at_slo_rps"])
disagg = max(per, g)
run.log_metrics({
    "best_global_n_p": int(best_global["n_p"]),
    "rate_at_slo_best_global_rps": round(g, 4),
    "rate_at_slo_per_scenario_rps": round(per, 4),
    "rate_at_slo_aggregated_rps": round(agg, 4),
    "rate_at_slo_aggregated_mixed_rps": round(agg_mixed, 4),
    "per_scenario_over_global_at_slo": round(per / g, 4) if g > 0 else 0.0,
    "disaggregated_over_aggregated_at_slo": round(disagg / agg, 4) if agg > 0 else 1e9,
    "disaggregated_over_aggregated_mixed_at_slo": round(disagg / agg_mixed, 4) if agg_mixed > 0 else 1e9,
})  # fmt: skip
best

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(glob["n_p"], glob["rate_at_slo_rps"], "o-", label="one mixed pool, fixed n_p")
ax.axhline(per, color="C1", ls="--", label=f"per-scenario groups (code {splits['code']}, conv {splits['conv']})")
ax.axhline(agg, color="C2", ls=":", label="aggregated (prefill-only iterations)")
ax.axhline(agg_mixed, color="C3", ls="-.", label="aggregated (mixed iterations)")
ax.set(xlabel=f"prefill instances n_p of {p.n_instances} (rest decode)",
       ylabel=f"throughput at SLO (req/s, {p.slo_target:.0%} attainment)",
       title=f"TTFT <= {p.ttft_slo_s:g} s, TPOT <= {p.tpot_slo_s * 1e3:g} ms, Llama-2-7B / {p.device}")
ax.legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig2_pd_ratio")
