# %% [markdown]
# # 20 · Scaling over Scaling — sequential scaling: rethinking as an absorbing Markov chain
# `reasoning.revise`: one attempt, then rounds of rethinking every attempt the trigger doubts
# (keep the steps before the first doubtful one, re-sample the rest). TTSPM: the first attempt is
# right with p0, a rethink of a wrong one succeeds with p_rethink, right stays right, so after N
# attempts 1 - (1 - p0)(1 - p_rethink)^(N-1) — the parallel form with a different first term,
# and its saturation point comes from the same expression. A pilot run estimates p0 and
# p_rethink (pooled, and per problem from replicated trajectories); a fresh run measures the
# curve. Feeds the claims sequential-geometric-model and sequential-saturation.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"seq_rounds": 6}
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
verifier = reasoning.OracleVerifier() if p.seq_verifier == "oracle" else reasoning.load_prm(folder, device=run.device)
# apart from the parallel problems (problem_seed + 1)
problems = task.generate(p.seq_problems, p.difficulty, seed=p.problem_seed + 1)

# %%
t0 = time.perf_counter()
curves, metrics = experiment.run_sequential(policy, problems, replicas=p.seq_replicas, rounds=p.seq_rounds,
                                            verifier=verifier, threshold=p.seq_threshold, temperature=p.temperature,
                                            seed=run.seed, eps=p.epsilon, mae_attempts=p.seq_mae_attempts)
seconds = time.perf_counter() - t0
run.save_table(curves, "sequential_curves")
run.log_metrics({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
run.log_timings({"sequential_seconds": round(seconds, 3)})
metrics

# %%
import matplotlib.pyplot as plt

par = run.load_table("parallel_curves")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
ax.plot(curves["attempts"], curves["observed"], "ko-", lw=2, label="observed (fresh run)")
ax.plot(curves["attempts"], curves["pred_geometric"], "-", label=f"geometric: p0 {metrics['seq_p0']:.2f}, "
        f"p_rethink {metrics['seq_p_rethink']:.2f} (pilot)")
ax.plot(curves["attempts"], curves["pred_per_problem"], "--", label="mean of per-problem chains (pilot)")
ax.plot(curves["attempts"], curves["parallel_same_p"], ":", label="independent retries at p0 (parallel form)")
ax.axvline(metrics["seq_nstar_pred"], color="grey", lw=1, ls="--")
ax.set(xlabel="attempts (1 + rethink rounds)", ylabel="accuracy",
       title=f"sequential scaling ({p.seq_verifier} trigger); N* = {metrics['seq_nstar_pred']} at eps = {p.epsilon}")
ax.legend(fontsize=7)
ax = axes[1]
for name, x, y in (("parallel Hit@N", par["N"], par["observed"]), ("sequential", curves["attempts"], curves["observed"])):
    line, = ax.plot(x, 1 - y, "o", ms=3, label=f"{name}: observed")
    fit = experiment.fit_geometric(x, y)
    ax.plot(x, (1 - fit["first"]) * (1 - fit["p"]) ** (x - 1), "-", color=line.get_color(),
            label=f"{name}: 1-F = (1-{fit['first']:.2f})(1-{fit['p']:.2f})^(N-1), R2 {fit['r2']:.2f}")
ax.set(yscale="log", xlabel="N (samples or attempts)", ylabel="1 - accuracy (log)",
       title="the shared upper-bound form: a geometric tail")
ax.legend(fontsize=7)
fig.tight_layout()
run.save_figure(fig, "fig2_sequential")
