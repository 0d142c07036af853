"""Paper 06: the pruned teacher-student perceptron — data, max-margin solver, replica theory."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import nnls

from paper06 import pruning


def _hard_margin_direction(x, y):
    """Exact hard-margin direction as the min-norm point of conv{y_mu x_mu} (NNLS)."""
    m = y[:, None] * x
    rho = 10.0
    a = np.vstack([m.T, rho * np.ones(len(m))])
    b = np.zeros(a.shape[0])
    b[-1] = rho
    lam, _ = nnls(a, b, maxiter=10_000)
    u = m.T @ lam
    return u / np.linalg.norm(u)


# ---------------- pruning ----------------


def test_select_kept_takes_the_right_end():
    difficulty = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
    rng = np.random.default_rng(0)
    assert list(pruning.select_kept(difficulty, 2, "hard", rng)) == [1, 4]
    assert list(pruning.select_kept(difficulty, 2, "easy", rng)) == [0, 2]
    chosen = pruning.select_kept(difficulty, 3, "random", rng)
    assert len(set(chosen)) == 3 and set(chosen) <= set(range(5))
    with pytest.raises(ValueError, match="strategy"):
        pruning.select_kept(difficulty, 2, "middle", rng)
    with pytest.raises(ValueError, match="n_keep"):
        pruning.select_kept(difficulty, 6, "hard", rng)


def test_prune_by_teacher_margin_keeps_the_smallest_margins():
    rng = np.random.default_rng(1)
    x, _ = pruning.teacher_student_data(20, 1000, rng)
    kept = pruning.prune(x, 0.2, "hard", 0.0, rng)
    dropped = np.setdiff1d(np.arange(len(x)), kept)
    assert len(kept) == 200
    assert np.abs(x[kept, 0]).max() <= np.abs(x[dropped, 0]).min()
    easy = pruning.prune(x, 0.2, "easy", 0.0, rng)
    assert np.abs(x[easy, 0]).min() >= np.abs(x[np.setdiff1d(np.arange(len(x)), easy), 0]).max()


def test_probe_at_angle_ranks_by_the_probe_not_the_teacher():
    rng = np.random.default_rng(2)
    x, _ = pruning.teacher_student_data(10, 2000, rng)
    kept = pruning.prune(x, 0.1, "hard", 90.0 - 1e-9, rng)  # probe ~ e2: teacher margin irrelevant
    assert np.abs(x[kept, 1]).max() < 0.2
    assert np.abs(x[kept, 0]).max() > 1.0


def test_grid_cells_lists_unpruned_and_random_once():
    cells = pruning.grid_cells([1, 2], [0.5, 1.0], ["hard", "easy", "random"], [0.0, 30.0])
    # per alpha: f=0.5 -> hard x2 thetas, easy x2 thetas, random x1; f=1 -> random x1
    assert len(cells) == 2 * (2 + 2 + 1 + 1)
    assert sum(c.keep_fraction == 1.0 for c in cells) == 2
    assert all(c.theta_deg == 0.0 for c in cells if c.strategy == "random")


# ---------------- the max-margin student ----------------


@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_max_margin_numpy_is_the_hard_margin_svm(alpha):
    rng = np.random.default_rng(3)
    x, y = pruning.teacher_student_data(30, int(alpha * 30), rng)
    w, info = pruning.max_margin_numpy(x, y)
    assert info.converged and info.max_violation < 1e-3
    exact = _hard_margin_direction(x, y)
    assert np.dot(w / np.linalg.norm(w), exact) > 1 - 1e-8


def test_torch_and_numpy_solvers_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x, y = pruning.teacher_student_data(25, 100, rng)
    w_np, info_np = pruning.max_margin_numpy(x, y)
    w_t, info_t = pruning.max_margin_torch(torch.as_tensor(x), torch.as_tensor(y))
    np.testing.assert_allclose(w_t.numpy(), w_np, rtol=1e-6, atol=1e-8)
    assert info_t.iterations == info_np.iterations


def test_angle_error_limits():
    e1 = np.array([1.0, 0.0, 0.0])
    assert pruning.angle_error(e1) == 0.0
    assert pruning.angle_error(-e1) == pytest.approx(1.0)
    assert pruning.angle_error(np.array([0.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert pruning.angle_error(np.array([1.0, 1.0, 0.0])) == pytest.approx(0.25)


def test_simulate_grid_is_deterministic_and_backends_agree():
    pytest.importorskip("torch")
    cells = pruning.grid_cells([2.0], [0.5, 1.0], ["hard", "random"])
    a = pruning.simulate_grid(20, cells, [0, 1])
    b = pruning.simulate_grid(20, cells, [0, 1])
    pd.testing.assert_frame_equal(a, b)
    t = pruning.simulate_grid(20, cells, [0, 1], backend="torch", device="cpu")
    np.testing.assert_allclose(t["test_error"], a["test_error"], atol=1e-7)
    with pytest.raises(ValueError, match="backend"):
        pruning.simulate_grid(20, cells, [0], backend="jax")


# ---------------- replica theory ----------------


def test_theory_random_pruning_recovers_the_optimal_perceptron_asymptote():
    # Max-stability perceptron: eps ~ 0.5005 / alpha for large alpha (Opper et al. 1990).
    assert 1000 * pruning.theory_error(1000.0, 1.0, "random") == pytest.approx(0.5005, abs=1e-3)


def test_theory_random_pruning_ignores_keep_fraction_and_probe():
    base = pruning.theory_error(3.0, 1.0, "random")
    assert pruning.theory_error(3.0, 0.3, "random") == pytest.approx(base, rel=1e-9)
    assert pruning.theory_error(3.0, 0.3, "random", theta_deg=25.0) == pytest.approx(base, rel=1e-9)


def test_theory_keep_hard_with_room_to_prune_equals_full_data():
    # The hardest 20% of alpha_tot = 32 hold every support vector of the full-data student.
    full = pruning.theory_error(32.0, 1.0, "random")
    assert pruning.theory_error(6.4, 0.2, "hard") == pytest.approx(full, rel=5e-3)


def test_theory_orders_strategies_in_both_regimes():
    te = pruning.theory_error
    assert te(0.4, 0.4, "easy") < te(0.4, 1.0, "random") < te(0.4, 0.4, "hard")  # scarce
    assert te(6.4, 0.2, "hard") < te(6.4, 0.2, "easy") < te(6.4, 1.0, "random")  # abundant


def test_theory_with_a_tiny_probe_angle_is_continuous_with_the_perfect_metric():
    perfect = pruning.theory_error(12.8, 0.4, "hard", 0.0, n_nodes=6)
    nearly = pruning.theory_error(12.8, 0.4, "hard", 0.5, n_nodes=6)
    assert nearly == pytest.approx(perfect, rel=1e-2)  # the 2-D quadrature reduces to the 1-D one
    far = pruning.theory_error(12.8, 0.4, "hard", 40.0, n_nodes=6)
    assert far > 1.5 * perfect  # and a far-off probe does hurt


def test_theory_matches_a_small_simulation():
    cells = [pruning.Cell(2.0, 1.0, "random"), pruning.Cell(8.0, 0.4, "hard"), pruning.Cell(2.0, 0.4, "easy")]
    sim = pruning.seed_mean(pruning.simulate_grid(100, cells, range(4)))
    merged = pruning.merge_theory(sim, pruning.theory_grid(cells, n_nodes=8))
    assert merged["theory_gap"].abs().max() < 0.03


def test_theory_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alpha_prune"):
        pruning.theory_error(0.0, 0.5, "hard")
    with pytest.raises(ValueError, match="keep_fraction"):
        pruning.theory_error(1.0, 1.5, "hard")


# ---------------- summaries ----------------


def test_pareto_frontier_takes_the_best_cell_at_each_pruned_size():
    table = pd.DataFrame(
        [
            # theta, alpha_total, f, strategy, alpha_prune, error
            (0.0, 2.0, 1.0, "random", 2.0, 0.20),
            (0.0, 4.0, 0.5, "random", 2.0, 0.22),
            (0.0, 4.0, 0.5, "hard", 2.0, 0.05),
            (0.0, 4.0, 0.5, "easy", 2.0, 0.15),
            (0.0, 4.0, 1.0, "random", 4.0, 0.10),
        ],
        columns=["theta_deg", "alpha_total", "keep_fraction", "strategy", "alpha_prune", "test_error"],
    )
    front = pruning.pareto_frontier(table)
    assert list(front["alpha_prune"]) == [2.0, 4.0]
    assert list(front["frontier_error"]) == [0.05, 0.10]
    assert front["random_error"].iloc[0] == pytest.approx(0.21)
    assert front["best_strategy"].iloc[0] == "hard"


def test_loglog_slope_of_a_power_law():
    alpha = np.array([1.0, 2.0, 4.0, 8.0])
    assert pruning.loglog_slope(alpha, 0.5 / alpha) == pytest.approx(-1.0)
    assert pruning.loglog_slope(alpha, 3 * alpha**-2.5) == pytest.approx(-2.5)
    assert math.isfinite(pruning.loglog_slope(alpha, np.exp(-alpha)))
