# %% [markdown]
# # 06 · Beyond neural scaling laws — an imperfect pruning metric
# The same perceptron **simulation** as notebook 01, but examples are ranked by their
# margin along a *probe* at angle theta to the teacher (theta = 0 is the perfect metric).
# Keep-hard at aggressive pruning should fail once theta is large: an imperfect metric
# sets a minimum useful keep fraction. The **replica theory** now has two overlaps (with
# the teacher and with the probe). Feeds claims perfect-metric-keep-hard-at-small-f,
# imperfect-metric-kills-keep-hard-at-small-f, theory-matches-simulation-theta.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_dim": 200}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p06

# %%
from shared import notebook

run = notebook.start("06", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import time

from paper06 import pruning

seeds = [run.seed + i for i in range(p.n_seeds)]
fractions = sorted(set(p.theta_keep_fractions) | {1.0})
# keep-hard at every probe angle; random pruning ignores the probe (listed at theta 0)
cells = pruning.grid_cells([p.theta_alpha_total], fractions, ["hard", "random"], p.thetas_deg)

# %%
started = time.perf_counter()
sim = pruning.simulate_grid(
    p.n_dim, cells, seeds, backend=p.backend, device=run.device, hinge_c=p.hinge_c, progress=run.progress
)
simulation_s = time.perf_counter() - started

started = time.perf_counter()
theory = pruning.theory_grid(cells, p.theory_nodes, progress=run.progress)
dense = pruning.theory_grid(
    pruning.dense_cells([p.theta_alpha_total], min(fractions), p.theory_dense_points, ("hard",), p.thetas_deg)
    + pruning.dense_cells([p.theta_alpha_total], min(fractions), p.theory_dense_points, ("random",)),
    p.theory_nodes,
    progress=run.progress,
)
theory_s = time.perf_counter() - started

merged = pruning.merge_theory(pruning.seed_mean(sim), theory)
run.save_table(sim, "theta_sim")
run.save_table(merged, "theta_grid")
run.save_table(dense, "theta_theory_dense")
merged.pivot_table(index="keep_fraction", columns=["strategy", "theta_deg"], values="test_error").round(4)


# %%
def hard_over_random(table, theta, column="test_error"):
    a, f = p.theta_alpha_total, p.theta_claim_keep_fraction
    return pruning.cell_error(table, a, f, "hard", theta, column) / pruning.cell_error(table, a, f, "random", 0.0, column)


metrics = {
    "theta0_hard_over_random": hard_over_random(merged, 0.0),
    "theta_claim_hard_over_random": hard_over_random(merged, p.theta_claim_deg),
    "theory_theta0_hard_over_random": hard_over_random(merged, 0.0, "theory_error"),
    "theory_theta_claim_hard_over_random": hard_over_random(merged, p.theta_claim_deg, "theory_error"),
    "theta_theory_gap_mean_abs": float(merged["theory_gap"].abs().mean()),
    "theta_theory_gap_max_abs": float(merged["theory_gap"].abs().max()),
}
run.log_metrics(metrics)
run.log_timings({"theta_simulation_s": simulation_s, "theta_theory_s": theory_s})
{k: round(v, 4) for k, v in metrics.items()}
