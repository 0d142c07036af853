# %% [markdown]
# # 60 · Past-Future scheduler — goodput vs load
# Four admission policies (shared.servesim: Aggressive = vLLM-like, Conservative = reserve
# max_new_tokens, PastFuture = LightLLM's future-peak rule with a history-quantile estimate,
# Oracle = the same rule with true lengths) on four workloads at loads x capacity. Capacity: the
# oracle's steady-state throughput with every request queued at t = 0. SLA per workload: TTFT <=
# 5 x the median prefill iteration, mean TPOT <= 1.5 x the median iteration, both of the oracle at
# load 1. Goodput = SLA-meeting requests per second. Main sweep: Llama-2-7B / A100 roofline
# (metrics.json); second sweep: the CPU-calibrated tiny model with the same KV budget in tokens
# (timings.json: it comes from wall-clock measurements).

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_requests": 500}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p60

# %%
from shared import notebook

run = notebook.start("60", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import numpy as np

from paper60 import sweep
from shared import servesim as S

a100 = S.StepModel(S.LLAMA2_7B, S.DEVICES[p.device])
engine = sweep.engine_for(p, a100)
table, errors = sweep.run_all(p, a100, engine, p.loads, p.seeds, progress=run.progress)
run.save_table(table, "goodput")
summary = sweep.summarise(table, p.heavy_load, p.light_load, p.claim_factor)
run.log_metrics({k: round(v, 4) for k, v in summary.items()} | {
    "peak_estimate_median_abs_error": round(float(np.median(np.abs(errors))), 4),
    "peak_estimate_median_error": round(float(np.median(errors)), 4),  # > 0: the estimate is above the realised peak
    "peak_estimate_decisions": len(errors)})
sweep.by_policy(table).round(3)

# %%
row = run.load_table("cpu_step_model").iloc[0]
shape = S.ModelShape(row["name"], row["n_params"], int(row["n_layers"]), int(row["d_model"]), int(row["kv_dim"]),
                     row["bytes_per_param"], row["bytes_per_kv"])
cpu = S.StepModel(shape, S.DeviceSpec("cpu", row["flops"], row["bandwidth"], row["memory"]),
                  row["mfu"], row["mbu"], row["overhead_s"], combine="sum")
cpu_table, cpu_errors = sweep.run_all(p, cpu, engine, p.cpu_loads, p.cpu_seeds, progress=run.progress)
run.save_table(cpu_table, "goodput_cpu_step_model")
cpu_summary = sweep.summarise(cpu_table, p.heavy_load, min(p.cpu_loads), p.claim_factor)
run.log_timings({f"cpu_{k}": v for k, v in cpu_summary.items()})
sweep.by_policy(cpu_table).round(3)
