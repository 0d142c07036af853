# %% [markdown]
# # 08 · SCALE — selective System 1 / System 2 allocation per step
# The artifact's policy solves arithmetic chains step by step (the task's steps are the
# sub-problems). Per step, SCALE decodes the step greedily (System 1, and the assessment), scores
# its difficulty from the policy's own token entropies and the step's context (a scorer fitted on
# held-out problems, never the gold answer of the problem at hand), and re-solves it with System 2
# (k sampled candidates, the PRM's best) when the score exceeds tau; the chosen step is the context
# of the next. Methods (`paper08.allocate`): uniform System 1, uniform System 2, SCALE(tau) for a
# sweep of tau per scorer, and random allocation at a sweep of System-2 shares. Cost = generated
# tokens, the assessment included. Feeds every claim.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"problems": 100}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p08

# %%
from shared import notebook

run = notebook.start("08", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import numpy as np
import torch

from paper08 import allocate
from shared import reasoning

torch.set_num_threads(p.num_threads)
folder = run.artifact("reasoning")
policy = reasoning.load_policy(folder, p.policy, device=run.device)
prm, task = reasoning.load_prm(folder, device=run.device), reasoning.load_task(folder)
held = task.generate(p.assessor_problems, p.difficulty, seed=p.assessor_seed)
problems = task.generate(p.problems, p.difficulty, seed=p.problem_seed)
print(f"policy {policy.name}: {policy.params:,} non-embedding parameters; {len(problems)} problems of {p.difficulty} steps "
      f"(mod {task.modulus}); artifact summary: {policy.summary.get('greedy_accuracy')} greedy accuracy")

# %% [markdown]
# Difficulty scorers, fitted on the held-out problems' steps decoded greedily from the gold context.

# %%
t0 = time.perf_counter()
held_steps = allocate.gold_context_steps(allocate.StepTree(policy, held, k=p.k, temperature=p.temperature,
                                                           verifier=prm, seed=run.seed + 1))
scorers = {s: allocate.fit_scorer(s, held_steps) for s in p.signals}
tree = allocate.StepTree(policy, problems, k=p.k, temperature=p.temperature, verifier=prm, seed=run.seed)
eval_steps = allocate.gold_context_steps(tree)  # the evaluation problems' own steps: the scorers' AUROC
for s, scorer in scorers.items():
    eval_steps[f"score_{s}"] = scorer.score(eval_steps[allocate.FEATURES].to_numpy(), np.array(eval_steps["context"].tolist()))
assess_seconds = time.perf_counter() - t0
run.save_table(eval_steps.drop(columns="context"), "eval_steps")
aurocs = {s: allocate.auroc(eval_steps["wrong"], eval_steps[f"score_{s}"]) for s in p.signals}
print(f"greedy step error rate (gold context): held-out {held_steps['wrong'].mean():.3f}, eval {eval_steps['wrong'].mean():.3f}; AUROC {aurocs}")

# %%
t0 = time.perf_counter()
table = allocate.execute(tree, allocate.methods(p.taus, p.random_fractions, p.signals, p.select), scorers,
                         seed=run.seed, progress=run.progress)
run_seconds = time.perf_counter() - t0
run.save_table(table, "methods")
table.round(3)

# %%
metrics = {f"{r.method}_{k}": round(float(getattr(r, k)), 4) for r in table.itertuples()
           for k in ("accuracy", "tokens", "s2_fraction")}
for s in p.signals:
    claims = allocate.claim_metrics(table, s, p.tolerance, p.token_budget, p.default_tau)
    metrics |= claims if s == p.signal else {f"{s}_{k}": v for k, v in claims.items() if k != "s2_gain"}
    metrics[f"{s}_auroc"] = None if aurocs[s] is None else round(aurocs[s], 4)
metrics["difficulty_auroc"] = metrics[f"{p.signal}_auroc"]
metrics |= {"eval_step_error_rate": round(float(eval_steps["wrong"].mean()), 4),
            "heldout_step_error_rate": round(float(held_steps["wrong"].mean()), 4)}
run.log_metrics(metrics)
run.log_timings({"assess_seconds": round(assess_seconds, 3), "methods_seconds": round(run_seconds, 3),
                 "tokens_decoded": tree.generated})
{k: v for k, v in metrics.items() if not k.startswith(tuple(f"{m}_" for m in table["method"]))} | {"s2_gain": metrics["s2_gain"]}
