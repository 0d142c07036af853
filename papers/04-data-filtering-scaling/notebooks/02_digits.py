# %% [markdown]
# # 04 · Scaling laws for data filtering — real images: scikit-learn digits
# **Real training on a real (bundled) data set.** Four disjoint buckets of 300 training
# images; in bucket i a rising share of labels (0, 10, 20, 30%) is replaced by another
# class. A softmax (multinomial logistic) student trained by SGD for a budget of samples
# seen; error on the clean held-out 25%. The same fit and prediction as notebook 01.
# Feeds the `digits-*` claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"digits_n_seeds": 5}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p04

# %%
from shared import notebook

run = notebook.start("04", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import time

import torch

from paper04 import pools, qqt

torch.set_num_threads(1)
size = p.digits_bucket_size
at = pools.checkpoints(p.first_n * size // p.bucket_size, size * 2**p.digits_budget_octaves, p.per_octave)
budgets = [size * 2**j for j in range(p.digits_budget_octaves + 1)]
seeds = [run.seed + i for i in range(p.digits_n_seeds)]
started = time.perf_counter()
runs = pools.run_grid(
    lambda seed: pools.digits_buckets(size, p.digits_noises, p.digits_test_fraction, seed),
    seeds, at, p.digits_lr0, progress=run.progress,
)
train_s = time.perf_counter() - started
mean = pools.mean_curves(runs)
run.save_table(mean, "digits_curves")
pools.best_pools(mean, budgets).round(4)

# %%
grids = {name: getattr(p, f"{name}_grid").values() for name in ("a", "d", "b", "tau")}
started = time.perf_counter()
result = qqt.analyse(mean, budgets, size, p.bucket_unit, grids, p.refine, p.tau_scaling)
fit_s = time.perf_counter() - started
fit = result["fit"]
names = [f"bucket{i + 1} ({n:.0%} noise)" for i, n in enumerate(p.digits_noises)]
run.save_table(fit.table(names).assign(noise=p.digits_noises), "digits_bucket_fits")
run.save_table(result["pools"], "digits_pool_predictions")
run.save_table(result["best"], "digits_best_pools")
print(fit.table(names).round(4).to_string())
result["best"].round(4)

# %%
metrics = {f"digits_{k}": v for k, v in result["summary"].items()}
metrics["digits_crossover_repetitions"] = qqt.crossover_repetitions(mean, size)
metrics["digits_full_pool_error_largest_budget"] = float(result["best"]["observed_best_error"].iloc[-1])
run.log_metrics(metrics)
run.log_timings({"digits_train_s": train_s, "digits_fit_s": fit_s})
{k: round(v, 4) for k, v in metrics.items()}
