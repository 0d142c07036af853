# %% [markdown]
# # 04 · Scaling laws for data filtering — the quality-quantity trade-off, teacher-student
# **A faithful simulation, not the paper's data.** Four quality buckets of 300 examples
# from one teacher (Gaussian inputs, labels sign(teacher · x)), the labels of bucket i
# flipped with rising probability (0, 5, 10, 15%) — the stand-in for the paper's T-MARS
# deciles top 0-10% .. 30-40%. Pools top-k = buckets 1..k. A logistic student is trained
# by SGD for a budget of samples seen; a small pool is repeated many times. Error = angle
# to the teacher / π (exact, no test set).
#
# Then the paper's method: fit the QQT law (`shared.scaling.qqt`: utility b and half-life
# tau per bucket, shared a and d) on the **single-bucket** curves only, **predict** the
# pools top-2..top-4 with `scaling.qqt_pool` without training on them, and pick the best
# pool per compute budget. Feeds the `ts-*` claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_seeds": 5}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p04

# %%
from shared import notebook

run = notebook.start("04", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import time

import torch

from paper04 import pools, qqt

torch.set_num_threads(1)  # the refinement fits are tiny; a second thread only contends
at = pools.checkpoints(p.first_n, p.bucket_size * 2**p.budget_octaves, p.per_octave)
budgets = [p.bucket_size * 2**j for j in range(p.budget_octaves + 1)]
seeds = [run.seed + i for i in range(p.n_seeds)]
started = time.perf_counter()
runs = pools.run_grid(
    lambda seed: pools.teacher_student(p.n_dim, p.bucket_size, p.noises, seed), seeds, at, p.lr0, progress=run.progress
)
train_s = time.perf_counter() - started
mean = pools.mean_curves(runs)
run.save_table(mean, "ts_curves")
pools.best_pools(mean, budgets).round(4)

# %% [markdown]
# ## Fit the buckets, predict the pools

# %%
grids = {name: getattr(p, f"{name}_grid").values() for name in ("a", "d", "b", "tau")}
started = time.perf_counter()
result = qqt.analyse(mean, budgets, p.bucket_size, p.bucket_unit, grids, p.refine, p.tau_scaling)
other = "none" if p.tau_scaling == "repo" else "repo"  # the other aggregation, as an ablation
ablation = qqt.analyse(mean, budgets, p.bucket_size, p.bucket_unit, grids, False, other)
fit_s = time.perf_counter() - started
fit = result["fit"]
names = [f"bucket{i + 1} ({n:.0%} noise)" for i, n in enumerate(p.noises)]
run.save_table(fit.table(names).assign(noise=p.noises), "ts_bucket_fits")
run.save_table(result["pools"], "ts_pool_predictions")
run.save_table(result["best"], "ts_best_pools")
run.save_table(ablation["pools"], f"ts_pool_predictions_tau_{other}")
print(fit.table(names).round(4).to_string())
result["best"].round(4)

# %%
metrics = {f"ts_{k}": v for k, v in result["summary"].items()}
metrics |= {f"ts_tau_{other}_{k}": ablation["summary"][k]
            for k in ("predicted_best_agreement", "predicted_best_regret_mean", "pool_prediction_mre")}
# > 1: the primary aggregation predicts the pools better than the other one
metrics[f"ts_mre_{other}_over_{p.tau_scaling}"] = ablation["summary"]["pool_prediction_mre"] / result["summary"]["pool_prediction_mre"]
metrics["ts_crossover_repetitions"] = qqt.crossover_repetitions(mean, p.bucket_size)
metrics["ts_fit"] = {"a": fit.a, "d": fit.d, **{f"b{i + 1}": b for i, b in enumerate(fit.b)},
                     **{f"tau{i + 1}": t for i, t in enumerate(fit.tau)}}
run.log_metrics(metrics)
run.log_timings({"ts_train_s": train_s, "ts_fit_s": fit_s})
{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items() if k != "ts_fit"}
