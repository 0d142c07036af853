# %% [markdown]
# # 60 · Past-Future scheduler — goodput vs load
# Five admission policies (shared.servesim: Aggressive = vLLM-like, Conservative = reserve
# max_new_tokens, PastFuture = the future-peak rule with the planning notes' history-quantile
# estimate, PastFutureSampled = the authors' sampled rule (window of 40 finished lengths, up to 5
# sampled batch futures, admit when the worst peak < 0.95 x capacity), Oracle = the rule with
# true lengths) on four workloads at loads x capacity, with prefill-only iterations
# (`mixed=False`, as vLLM v0 and LightLLM run). Capacity: the oracle's steady-state throughput
# with every request queued at t = 0. SLA per workload (ours): TTFT_i <= 5 x (median iteration +
# the lone prefill of prompt_i), mean TPOT <= 1.5 x the median iteration, both of the oracle at
# load 1. Goodput = SLA-meeting requests per second. Main sweep: Llama-2-7B / A100 roofline
# (metrics.json), and as an extra the same with mixed iterations; second sweep: the
# CPU-calibrated tiny model (timings.json: it comes from wall-clock measurements).

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_requests": 500}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p60

# %%
from shared import notebook

run = notebook.start("60", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import dataclasses

import numpy as np

from paper60 import sweep
from shared import servesim as S

a100 = S.StepModel(S.LLAMA2_7B, S.DEVICES[p.device])
engine = sweep.engine_for(p, a100)
table, errors = sweep.run_all(p, a100, engine, p.loads, p.seeds, progress=run.progress)
run.save_table(table, "goodput")
summary = sweep.summarise(table, p.heavy_load, p.light_load, p.claim_factor)
summary |= sweep.summarise(table, p.heavy_load, p.light_load, p.claim_factor, "pastfuture_sampled", "pfs")
for name, key in (("pastfuture", "peak_estimate"), ("pastfuture_sampled", "peak_estimate_sampled")):
    e = errors[name]
    summary |= {f"{key}_median_abs_error": float(np.median(np.abs(e))) if len(e) else np.nan,
                f"{key}_median_error": float(np.median(e)) if len(e) else np.nan,  # > 0: above the realised peak
                f"{key}_decisions": len(e)}
run.log_metrics({k: round(v, 4) for k, v in summary.items()})
sweep.by_policy(table).round(3)

# %%
if p.mixed_extra:  # the same sweep with the other iteration kind: extra metrics, no claim
    other = dataclasses.replace(engine, mixed=not p.mixed)
    tag = "mixed" if other.mixed else "unmixed"
    extra, _ = sweep.run_all(p, a100, other, p.loads, p.seeds, progress=run.progress)
    run.save_table(extra, f"goodput_{tag}")
    extra_summary = sweep.summarise(extra, p.heavy_load, p.light_load, p.claim_factor)
    extra_summary |= sweep.summarise(extra, p.heavy_load, p.light_load, p.claim_factor, "pastfuture_sampled", "pfs")
    run.log_metrics({f"{tag}_{k}": round(v, 4) for k, v in extra_summary.items()})
    display = sweep.by_policy(extra).round(3)
else:
    display = "mixed_extra: false"
display

# %%
row = run.load_table("cpu_step_model").iloc[0]
shape = S.ModelShape(row["name"], row["n_params"], int(row["n_layers"]), int(row["d_model"]), int(row["kv_dim"]),
                     row["bytes_per_param"], row["bytes_per_kv"])
cpu = S.StepModel(shape, S.DeviceSpec("cpu", row["flops"], row["bandwidth"], row["memory"]),
                  row["mfu"], row["mbu"], row["overhead_s"], combine="sum", prefill_mfu=row["prefill_mfu"])
cpu_table, _ = sweep.run_all(p, cpu, engine, p.cpu_loads, p.cpu_seeds, progress=run.progress)
run.save_table(cpu_table, "goodput_cpu_step_model")
cpu_summary = sweep.summarise(cpu_table, p.heavy_load, min(p.cpu_loads), p.claim_factor)
cpu_summary |= sweep.summarise(cpu_table, p.heavy_load, min(p.cpu_loads), p.claim_factor, "pastfuture_sampled", "pfs")
run.log_timings({f"cpu_{k}": v for k, v in cpu_summary.items()})
sweep.by_policy(cpu_table).round(3)
