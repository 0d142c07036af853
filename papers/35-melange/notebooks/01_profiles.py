# %% [markdown]
# # 35 · Mélange — GPU profiles from the serving simulator
# For each model (Llama-2-7B; 70B on tensor-parallel replicas at cpu/gpu scale), GPU type (L4, A10G,
# A100-80GB, H100) and request-size bucket: saturated simulations (shared.servesim) at a growing
# max batch; the maximum throughput whose mean TPOT meets each SLO (40 / 120 ms) is the profile.
# Tokens per dollar per bucket feed the claims a10g-better-small and a100-better-large.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"batch_growth": 2.0}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p35

# %%
from shared import notebook

run = notebook.start("35", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import pandas as pd

from paper35 import gpus, profile

bucket_list = profile.buckets(p.input_edges, p.output_edges)
instances, rows = {}, []
for model in p.models:
    for g in p.gpus:
        tp = gpus.min_tp(g, model, p.min_kv_tokens, p.max_tp)
        if tp is None:
            continue
        name = f"{model}/{tp}x{g}"
        instances[name] = gpus.instance(g, model, tp, p.mfu, p.mbu, p.overhead_ms / 1e3)
        rows.append({"model": model, "instance": name, "gpu": g, "tp": tp, "usd_per_hour": tp * p.prices[g],
                     "kv_tokens": instances[name].kv_capacity_tokens(), "price_source": gpus.PRICES[g][1]})
inst = pd.DataFrame(rows)
run.save_table(inst, "instances")
start = time.perf_counter()
table, sweeps = profile.profile(instances, bucket_list, [s / 1e3 for s in p.slos_ms], progress=run.progress,
                                requests_per_slot=p.requests_per_slot, min_requests=p.min_requests,
                                max_batch=p.max_batch, growth=p.batch_growth, seed=run.seed)
profile_s = time.perf_counter() - start
table = table.merge(inst[["instance", "model", "gpu", "tp", "usd_per_hour"]], on="instance")
mean_out = (table["out_lo"] + table["out_hi"] + 1) / 2
table["tokens_per_usd"] = table["max_throughput_rps"] * mean_out * 3600 / table["usd_per_hour"]
run.save_table(table, "profiles")
run.save_table(sweeps, "profile_sweeps")
inst

# %%
t7 = table[table["model"] == "llama2-7b"].pivot_table(index=["bucket", "slo_ms"], columns="gpu", values="tokens_per_usd")
small, large = t7.xs(0, level="bucket"), t7.xs(len(bucket_list) - 1, level="bucket")
best_by_bucket = table[table["max_throughput_rps"] > 0].loc[
    lambda d: d.groupby(["model", "bucket", "slo_ms"])["tokens_per_usd"].idxmax()]
run.save_table(best_by_bucket, "best_by_bucket")
run.log_metrics({
    "a10g_over_a100_tpd_small": round(float((small["A10G"] / small["A100"]).max()), 4),
    "a100_over_a10g_tpd_large": round(float((large["A100"] / large["A10G"]).replace(float("inf"), float("nan")).max()), 4),
    "distinct_best_gpus_7b": int(best_by_bucket[best_by_bucket["model"] == "llama2-7b"]["gpu"].nunique()),
    "profile_points": len(sweeps),
})
run.log_timings({"profile_s": profile_s, "profile_sims_per_s": len(sweeps) / profile_s})
t7.round(0)
