"""Paper 09: Projektor's projection, OT gradient, stage 1 and selection."""

import numpy as np
import pytest

from paper09 import projektor


def test_projection_is_exact_on_log_linear_curves():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=2)
        n0, n1 = sorted(rng.uniform(10, 1000, size=2))
        n = rng.uniform(1, 1e6, size=7)
        curve = lambda m: a + b * np.log(m)  # noqa: E731
        np.testing.assert_allclose(projektor.project(n, n0, n1, curve(n0), curve(n1)), curve(n), rtol=1e-10, atol=1e-10)


def test_projection_of_log_error_is_the_power_law_through_the_pilots():
    err = lambda m: 3.0 * m ** -0.4  # noqa: E731
    perf = projektor.project(1600, 100, 200, np.log(err(100)), np.log(err(200)))
    assert np.exp(perf) == pytest.approx(err(1600), rel=1e-12)
    # not exact on a curve with an offset (err -> 0.05): the projection undershoots the error there
    off = lambda m: 0.05 + 3.0 * m ** -0.4  # noqa: E731
    assert np.exp(projektor.project(1600, 100, 200, np.log(off(100)), np.log(off(200)))) < off(1600)


def test_projection_rejects_bad_pilot_sizes():
    with pytest.raises(ValueError, match="n0 < n1"):
        projektor.project(800, 200, 100, 0.5, 0.6)


def test_accuracy_log_error_round_trip():
    acc = np.array([0.5, 0.9, 0.99])
    np.testing.assert_allclose(projektor.to_accuracy(projektor.to_perf(acc, "log_error", 400), "log_error"), acc)
    assert np.isfinite(projektor.to_perf(1.0, "log_error", 400))  # a perfect score is not log(0)


def test_simplex_projection():
    np.testing.assert_allclose(projektor.project_onto_simplex(np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5])
    out = projektor.project_onto_simplex(np.array([2.0, -1.0, 0.5]))
    assert out.sum() == pytest.approx(1.0) and np.all(out >= 0) and out[1] == 0.0
    np.testing.assert_allclose(projektor.project_onto_simplex(np.array([0.5, 0.5, 0.5])), [1 / 3] * 3)


def _clouds(seed=0, n=60, m=47):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = rng.integers(0, 3, n)
    x_val = rng.normal(size=(m, 4)) + 0.3
    y_val = rng.integers(0, 3, m)
    return x, y, x_val, y_val


def test_label_cost_raises_the_distance_of_mislabelled_data():
    x, y, x_val, y_val = _clouds()
    same = projektor.transport(x_val, y_val, x_val, y_val, 1.0, 1.0).distance
    assert same == pytest.approx(0.0, abs=1e-12)
    wrong = projektor.transport(x_val, (y_val + 1) % 3, x_val, y_val, 1.0, 1.0).distance
    assert wrong > 0.1


def test_dual_potentials_give_the_gradient_of_ot_in_the_mixture():
    # Two "sources" (halves of the training set) reweighted: the directional derivative of OT
    # along the simplex equals the difference of the sources' mean dual potentials.
    x, y, x_val, y_val = _clouds(1)
    origin = np.repeat([0, 1], len(y) // 2)

    def ot_at(p):
        w = np.where(origin == 0, p[0], p[1]) / (len(y) // 2)
        return projektor.transport(x, y, x_val, y_val, 1.0, 0.5, weights=w)

    p = np.array([0.3712, 0.6288])  # weights not commensurate with 1/m: a non-degenerate LP, unique duals
    t = ot_at(p)
    means = np.array([t.f[origin == i].mean() for i in (0, 1)])
    grad = projektor.tangent_gradient(means)
    eps = 1e-5
    finite = (ot_at(p + [eps, -eps]).distance - ot_at(p - [eps, -eps]).distance) / (2 * eps)
    assert finite == pytest.approx(grad[0] - grad[1], rel=1e-3, abs=1e-6)


def test_calibrated_gradient_matches_the_authors_formula_and_the_tangent_gradient():
    rng = np.random.default_rng(2)
    f = rng.normal(size=30)
    origin = np.repeat([0, 1, 2], [5, 10, 15])
    calib = projektor.calibrated_gradient(f, origin, 3)
    part = f[:5].sum()
    assert calib[0] == pytest.approx((part - (f.sum() - part) * 5 / 25) / 5)
    # (1 - p_i) calib_i = m_i - sum_j p_j m_j: the tangent gradient up to a constant
    p = np.array([5, 10, 15]) / 30
    means = np.array([f[origin == i].mean() for i in range(3)])
    lhs = (1 - p) * calib
    np.testing.assert_allclose(lhs - lhs.mean(), projektor.tangent_gradient(means) - 0, atol=1e-12)
    assert projektor.calibrated_gradient(f, np.zeros(30, int), 3)[0] == 0.0  # one source only: no direction


def test_stage1_features_and_their_gradient():
    p = np.array([0.2, 0.5, 0.3])
    d = 0.7
    feats = projektor.features(p, [d])[0]
    np.testing.assert_allclose(feats, [d, 0.2, 0.5, 0.2 * d, 0.5 * d, 0.04 * d, 0.25 * d])
    coef = np.random.default_rng(3).normal(size=7)
    ot_grad = np.array([0.3, -0.1, 0.05])  # dOT/dp_j

    def model(q):  # extension off the simplex: OT linear in p with slope ot_grad
        return projektor.features(q, [d + ot_grad @ (q - p)])[0] @ coef

    grad = projektor.feature_gradient(p, d, coef, ot_grad)
    eps = 1e-6
    numeric = np.array([(model(p + eps * e) - model(p - eps * e)) / (2 * eps) for e in np.eye(3)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_stage1_recovers_a_linear_law():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(3), size=40)
    d = rng.uniform(0.2, 1.0, 40)
    coef = np.array([-1.5, 0.3, -0.2, 0.4, 0.1, -0.3, 0.2])
    perf = projektor.features(p, d) @ coef + 0.1
    stage = projektor.fit_stage1(100, p, d, perf)
    np.testing.assert_allclose(stage.coef, coef, atol=1e-8)
    np.testing.assert_allclose(stage.predict(p[:3], d[:3]), perf[:3], atol=1e-8)
