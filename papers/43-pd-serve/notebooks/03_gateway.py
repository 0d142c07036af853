# %% [markdown]
# # 43 · P/D-Serve — gateway: on-demand forwarding (reject and retry) vs stale queue reports
# The prefill pool alone (prefill-only iterations, Llama-2-7B on a servesim roofline), the mixed
# Azure code + conv workload at a fixed share of the pool's prefill capacity. The gateway either
# routes on queue-length reports refreshed every Δ s (paper43.pdserve.StaleReports) or offers
# each request to instances in turn, each rejecting it while its queued prompt tokens exceed a
# bound (RejectRetry; rejected everywhere, it waits at the gateway). TTFT timeout rate = share of
# requests whose first token comes later than the TTFT SLO. Feeds reject-retry-timeouts.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"gateway_load": 0.9}
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
cfg = S.EngineConfig(kv_tokens=step.kv_capacity_tokens(), max_new_tokens=p.max_output)
probe, _ = D.mixed_trace(20000, 1.0, 10_000, p.code_share, p.max_prompt, p.max_output)
prompts = probe.prompt.astype(np.float64)
capacity = p.gateway_prefill_instances / float(np.mean(step.seconds(prompts, prompts * (prompts + 1) / 2, 0, 0)))
gateways = {f"stale Δ={dt:g}s": (lambda dt=dt: D.StaleReports(dt)) for dt in p.gateway_intervals_s}
gateways["reject-retry"] = lambda: D.RejectRetry(p.reject_bound_tokens)
rows = []
for seed in run.progress(p.seeds, desc="seeds"):
    trace, _ = D.mixed_trace(p.gateway_requests, p.gateway_load * capacity, seed, p.code_share, p.max_prompt,
                             p.max_output)
    pre = D.prefill_only(trace)
    for name, make in gateways.items():
        gw = make()
        engines = [S.Engine(pre, step, cfg, S.Aggressive(), False) for _ in range(p.gateway_prefill_instances)]
        owner = D.run_pool(pre, engines, gw)
        ttft = np.array([engines[k].finish[i] for i, k in enumerate(owner)]) - trace.arrival_s
        rows.append({"seed": seed, "gateway": name, "timeout_rate": float((ttft > p.ttft_slo_s).mean()),
                     "ttft_p50_s": float(np.median(ttft)), "ttft_p99_s": float(np.percentile(ttft, 99)),
                     "rejections": getattr(gw, "rejections", 0)})
table = pd.DataFrame(rows)
run.save_table(table, "gateway_runs")
mean = table.groupby("gateway", as_index=False)[["timeout_rate", "ttft_p50_s", "ttft_p99_s"]].mean()
stale = float(mean.loc[mean["gateway"] == f"stale Δ={p.gateway_claim_interval_s:g}s", "timeout_rate"].iloc[0])
rr = float(mean.loc[mean["gateway"] == "reject-retry", "timeout_rate"].iloc[0])
run.log_metrics({"gateway_capacity_rps": round(capacity, 4), "timeout_rate_stale": round(stale, 4),
                 "timeout_rate_reject_retry": round(rr, 4),
                 "timeout_reduction": round(1 - rr / stale, 4) if stale > 0 else 0.0})
mean

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, ax = plt.subplots(figsize=(6, 4))
sns.barplot(data=table, x="gateway", y="timeout_rate", ax=ax, errorbar=None)
ax.set(ylabel=f"TTFT timeout rate (> {p.ttft_slo_s:g} s)", xlabel="",
       title=f"{p.gateway_prefill_instances} prefill instances at {p.gateway_load:.0%} load")
fig.tight_layout()
run.save_figure(fig, "fig3_gateway")
