# %% [markdown]
# # 10 · ScaleRL — RL runs of several recipes on our policy
# A copy of one of the `reasoning` artifact's policies is RL-trained (shared.rl) by every recipe of
# the config on the same problems: a DAPO-style baseline, ScaleRL's CISPO loss with the baseline's
# details, and the ScaleRL recipe (CISPO, prompt-level aggregation, batch advantage normalisation,
# zero-variance filtering, no-positive-resampling, PipelineRL-k); ScaleRL again at extra seeds.
# Every evaluation row (compute in FLOPs, held-out pass rate) goes to `runs.csv` for notebook 02.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"rl.steps": 100}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p10

# %%
from shared import notebook

run = notebook.start("10", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import torch

from paper10 import runs
from shared import reasoning

torch.set_num_threads(p.num_threads)
folder = run.artifact("reasoning")
policy = reasoning.load_policy(folder, p.policy, device=run.device)
pool, held_out = runs.problems(reasoning.load_task(folder), p)
print(f"policy {p.policy}: {policy.params:,} non-embedding parameters; {len(pool)} training / {len(held_out)} held-out problems")
runs.plan(p)

# %%
t0 = time.perf_counter()
table = runs.run_all(policy, p, pool, held_out, progress=run.progress)
seconds = time.perf_counter() - t0
run.save_table(table, "runs")
metrics = runs.run_metrics(table, p) | {"policy_params": int(policy.params)}
run.log_metrics(metrics)
run.log_timings({"rl_runs_s": round(seconds, 2), "rl_steps_per_s": round(len(runs.plan(p)) * p.recipe(p.scalerl).steps / seconds, 3)})
table.groupby(["recipe", "seed"])[["flops", "eval_sampled", "eval_greedy"]].agg(["first", "last"])
