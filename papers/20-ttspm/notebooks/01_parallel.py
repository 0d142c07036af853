# %% [markdown]
# # 20 · Scaling over Scaling — parallel scaling: predicted vs observed Hit@N and saturation points
# TTSPM's parallel model: N independent candidates, each correct with probability p_x, hit at
# least once with probability 1 - (1 - p_x)^N; the marginal gain p_x (1 - p_x)^N falls below
# eps at N* = ceil(ln(eps / p_x) / ln(1 - p_x)). Per problem (graded difficulty) we estimate p_x
# from a few pilot samples of the artifact's policy, predict Hit@N and N*, and measure both on
# fresh samples (unbiased pass@k). Also: the mean of per-problem curves vs the curve of the mean p
# (heterogeneity), an empirical-Bayes p, and best-of-N with the PRM / majority vote under the
# Hit@N ceiling. Feeds the claims parallel-hit-model, saturation-point-correlation,
# gain-beyond-saturation and heterogeneity.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"problems": 100}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p20

# %%
from shared import notebook

run = notebook.start("20", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import torch

from paper20 import experiment
from shared import reasoning

torch.set_num_threads(p.num_threads)
folder = run.artifact("reasoning")
policy, task = experiment.load_policy(folder, p.policy, device=run.device)
prm = reasoning.load_prm(folder, device=run.device)
problems = task.generate(p.problems, p.difficulty, seed=p.problem_seed)
print(f"policy {policy.name}: {policy.params:,} non-embedding parameters; {len(problems)} problems of {p.difficulty} steps")

# %%
t0 = time.perf_counter()
tables = experiment.run_parallel(policy, problems, pilot=p.pilot_samples, fresh=p.fresh_samples, eps=p.epsilon,
                                 temperature=p.temperature, seed=run.seed, verifier=prm, selection_ns=p.selection_ns)
seconds = time.perf_counter() - t0
for name, table in tables.items():
    run.save_table(table, f"parallel_{name}")
metrics = experiment.parallel_metrics(tables, p.epsilon)
run.log_metrics({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
run.log_timings({"parallel_seconds": round(seconds, 3)})
metrics

# %%
import matplotlib.pyplot as plt
import seaborn as sns

curves, per = tables["curves"], tables["per_problem"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
ax.plot(curves["N"], curves["observed"], "k-", lw=2.5, label="observed (fresh samples)")
for col, style, label in (("pred_mean_of_curves", "-", "mean of per-problem curves (pilot p)"),
                          ("pred_curve_of_mean", "--", "curve of the mean p"),
                          ("pred_beta_binomial", ":", "empirical-Bayes p (beta-binomial)"),
                          ("pred_insample", "-.", "in-sample p (fresh samples)")):
    ax.plot(curves["N"], curves[col], style, label=label)
if "selection" in tables:
    sel = tables["selection"]
    ax.plot(sel["N"], sel["best_of_n_prm"], "s", label="best-of-N, PRM (selected)")
    ax.plot(sel["N"], sel["majority_vote"], "^", label="majority vote (selected)")
ax.set(xscale="log", xlabel="N (samples per problem)", ylabel="Hit@N (problems with a correct sample)",
       title=f"parallel scaling, {policy.name} policy, {len(per)} problems")
ax.legend(fontsize=7)
ax = axes[1]
sns.scatterplot(data=per, x="nstar_pred", y="nstar_obs", hue="difficulty", palette="viridis", ax=ax, alpha=0.7)
top = max(per["nstar_pred"].max(), per["nstar_obs"].max()) + 1
ax.plot([0, top], [0, top], "k:", lw=1)
ax.set(xlabel="predicted N* (pilot p)", ylabel="observed N* (fresh Hit@N curve)",
       title=f"saturation points, eps = {p.epsilon}: r = {metrics['nstar_pearson']:.2f}")
fig.tight_layout()
run.save_figure(fig, "fig1_parallel")
