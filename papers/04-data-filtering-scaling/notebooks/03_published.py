# %% [markdown]
# # 04 · Scaling laws for data filtering — the authors' fitted parameters
# `data/parameter_values.jsonl` from locuslab/scaling_laws_data_filtering (see
# data/SOURCE.md): the QQT parameters the authors fitted on DataComp medium with T-MARS
# buckets (ImageNet zero-shot error). Two uses: (1) rerun their best-pool estimate
# (estimate_best_pool.py: tau x buckets, budgets 32M-640M) through `scaling.qqt_pool`;
# (2) the reference our fitted parameters are compared with (figures notebook), only
# qualitatively: a different data set, task and error scale.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p04

# %%
from shared import notebook

run = notebook.start("04", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import numpy as np
import pandas as pd

from paper04 import qqt
from shared.paths import ROOT

pub = qqt.published(ROOT / "papers/04-data-filtering-scaling/data/parameter_values.jsonl", p.published_key)
params = pd.DataFrame({"bucket": pub["names"], "a": pub["a"], "d": pub["d"], "b": pub["b"], "tau": pub["tau"]})
run.save_table(params, "published_params")
best = qqt.published_best_pools(pub, p.published_budgets)
run.save_table(best, "published_best_pools")
dense = qqt.published_best_pools(pub, np.geomspace(min(p.published_budgets) / 4, max(p.published_budgets) * 4, 41))
run.save_table(dense, "published_pool_curves")
best.round(4)

# %%
k = best["best_k"].to_numpy()
metrics = {
    "published_best_k_smallest_budget": int(k[0]),
    "published_best_k_largest_budget": int(k[-1]),
    "published_best_k_shift": int(k[-1] - k[0]),  # > 0: more buckets are worth it at more compute
    "published_abs_b_increases_with_noise": int(np.sum(np.diff(np.abs(pub["b"])) > 0)),
    "published_tau_noisiest_over_cleanest": float(pub["tau"][-1] / pub["tau"][0]),
}
run.log_metrics(metrics)
metrics
