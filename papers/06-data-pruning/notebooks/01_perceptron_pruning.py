# %% [markdown]
# # 06 · Beyond neural scaling laws — pruning the teacher–student perceptron
# A **simulation** of the paper's Sec. 2 model: Gaussian inputs labelled by a teacher
# perceptron, pruned by their margin along the teacher (the perfect metric), keeping the
# hardest, the easiest or a random fraction f of alpha_tot·N examples; a max-margin
# student is trained on what is kept and scored by its angle to the teacher. Beside it,
# the **replica theory** of the same model (N, P -> infinity), solved numerically.
# Feeds claims keep-hard-when-abundant, keep-hard-matches-full-data, keep-easy-when-scarce,
# keep-hard-worst-when-scarce, pareto-frontier-beats-random, frontier-steeper-than-power-law,
# theory-matches-simulation-mean, theory-matches-simulation-max.

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

import numpy as np

from paper06 import pruning

seeds = [run.seed + i for i in range(p.n_seeds)]
cells = pruning.grid_cells(p.alpha_totals, p.keep_fractions, p.strategies)
print(f"{len(cells)} cells x {len(seeds)} seeds, N = {p.n_dim}, students solved with {p.backend} on {run.device}")

# %% [markdown]
# ## Simulation: max-margin students on every pruned set

# %%
started = time.perf_counter()
sim = pruning.simulate_grid(
    p.n_dim, cells, seeds, backend=p.backend, device=run.device, hinge_c=p.hinge_c, progress=run.progress
)
simulation_s = time.perf_counter() - started
run.save_table(sim, "perceptron_sim")
print(f"{len(sim)} students in {simulation_s:.1f} s; worst margin shortfall {sim['max_violation'].max():.1e}")

# %% [markdown]
# ## Replica theory on the same cells, and dense lines for the figure

# %%
started = time.perf_counter()
theory = pruning.theory_grid(cells, p.theory_nodes, progress=run.progress)
dense = pruning.theory_grid(
    pruning.dense_cells(p.alpha_totals, min(p.keep_fractions), p.theory_dense_points), p.theory_nodes
)
theory_s = time.perf_counter() - started
mean = pruning.seed_mean(sim)
merged = pruning.merge_theory(mean, theory)
run.save_table(merged, "perceptron_grid")
run.save_table(dense, "perceptron_theory_dense")
merged.pivot_table(index=["alpha_total", "keep_fraction"], columns="strategy", values=["test_error", "theory_error"]).round(4)

# %% [markdown]
# ## Pareto frontier: the best error at each pruned size, against random pruning

# %%
started = time.perf_counter()
frontier_sim = pruning.pareto_frontier(mean)
alpha_prunes = np.geomspace(min(p.alpha_totals) * min(p.keep_fractions), max(p.alpha_totals), p.frontier_points)
frontier_grid = pruning.theory_frontier(alpha_prunes, p.alpha_totals, p.theory_nodes)
frontier_wide = pruning.theory_frontier(
    alpha_prunes, np.geomspace(1.0, p.frontier_alpha_total_max, p.frontier_points), p.theory_nodes
)
frontier_s = time.perf_counter() - started
frontier_theory = frontier_grid.assign(envelope="grid alpha_tot").merge(
    frontier_wide[["alpha_prune", "frontier_error"]].rename(columns={"frontier_error": "frontier_error_wide"}),
    on="alpha_prune",
)
run.save_table(frontier_sim, "frontier_sim")
run.save_table(frontier_theory, "frontier_theory")
frontier_sim.round(4)

# %%
metrics = pruning.grid_metrics(
    merged,
    frontier_sim,
    abundant=(p.abundant_alpha_total, p.abundant_keep_fraction),
    scarce=(p.scarce_alpha_total, p.scarce_keep_fraction),
    frontier_min_alpha_prune=p.frontier_min_alpha_prune,
    frontier_max_keep_fraction=p.frontier_max_keep_fraction,
    slope_range=tuple(p.slope_alpha_prune_range),
)
metrics |= {
    "solver_max_violation": float(sim["max_violation"].max()),
    "solver_max_newton_steps": int(sim["newton_iterations"].max()),
    "solver_unconverged_students": int((~sim["converged"]).sum()),
}
run.log_metrics(metrics)
run.log_timings({"perceptron_simulation_s": simulation_s, "perceptron_theory_s": theory_s, "frontier_s": frontier_s})
{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
