"""Paper 09: sources, mixtures, the baselines' fits and the parameter checks."""

import numpy as np
import pytest
from pydantic import ValidationError

from paper09 import baselines, config, sources

pytestmark = pytest.mark.usefixtures("one_thread")  # the toolkit's fits run in torch


def test_simplex_grid_and_counts():
    grid = sources.simplex_grid(3, 4)
    assert grid.shape == (15, 3)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert len(sources.simplex_grid(3, 3)) == 10
    np.testing.assert_array_equal(sources.counts(np.array([1 / 3, 1 / 3, 1 / 3]), 100), [34, 33, 33])
    assert sources.counts(np.array([0.25, 0.75, 0.0]), 7).sum() == 7


@pytest.fixture(scope="module")
def market():
    return sources.digits_market(400, 0.3, 30.0, 7, 200, seed=0)


def test_sources_have_their_defects(market):
    clean, noisy, rotated = market.sources
    assert clean.y.max() == 6 and len(noisy.y) == len(rotated.y) == 1797 - 400
    flipped = np.mean(noisy.y != rotated.y)  # rotated keeps the true labels
    assert 0.25 < flipped < 0.35
    assert not np.allclose(noisy.x, rotated.x)
    assert all(len(r) == 200 for r in market.revealed)


def test_pilot_draws_use_revealed_samples_only(market):
    rng = np.random.default_rng(0)
    x, y, origin = sources.draw(market, np.array([0.5, 0.5, 0.0]), 200, rng, revealed_only=True)
    assert len(y) == 200 and set(origin) == {0, 1}
    shown = market.sources[0].x[market.revealed[0]]
    assert all(np.any(np.all(np.isclose(shown, row), axis=1)) for row in x[origin == 0][:10])
    with pytest.raises(ValueError, match="revealed samples of clean_0to6"):
        sources.draw(market, np.array([1.0, 0.0, 0.0]), 300, rng, revealed_only=True)


def test_more_clean_data_helps_the_learner(market):
    rng = np.random.default_rng(1)
    acc = [sources.train_accuracy(*sources.draw(market, np.array([0.0, 0.0, 1.0]), n, rng, False)[:2],
                                  market.x_val, market.y_val, 1.0) for n in (50, 800)]
    assert acc[1] > acc[0] + 0.05


def test_power_law_recovers_a_learning_curve():
    n = np.repeat([50.0, 100.0, 150.0, 200.0, 400.0], 2)
    acc = 0.95 - 0.3 * (n / 100) ** -0.6
    fit = baselines.fit_power_law(n, acc, 100)
    assert fit.values["A"] == pytest.approx(0.95, abs=0.01)
    assert fit.values["c"] == pytest.approx(0.6, abs=0.05)
    assert baselines.predict_power_law(fit, [1600], 100)[0] == pytest.approx(0.95 - 0.3 * 16**-0.6, abs=0.005)
    with pytest.raises(ValueError, match="3 distinct sizes"):
        baselines.fit_power_law(np.array([100.0, 100.0, 200.0]), np.array([0.8, 0.81, 0.85]), 100)


def test_mixing_law_recovers_its_parameters():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=30)
    n = rng.choice([100.0, 200.0], size=30)
    err = 0.02 + np.exp(p @ np.array([-1.0, -2.0, -0.5]) - 0.5 * np.log(n / 100))
    fit = baselines.fit_mixing_law(p, n, 1 - err, 100)
    np.testing.assert_allclose(baselines.predict_mixing_law(fit, p[:5], n[:5], 100), 1 - err[:5], atol=2e-3)
    assert fit.values["alpha"] == pytest.approx(0.5, abs=0.05)


def _params(**change):
    base = dict(val_size=400, label_noise=0.3, rotation_deg=30, clean_classes=7, revealed=200, logreg_c=1.0, n0=100,
                n1=200, targets=[400, 800], claim_target=800, pilot_steps=3, pilot_repeats=2, ot_draws=2,
                label_cost=1.0, target="log_error", power_law_sizes=[50, 100, 150, 200], eval_steps=4,
                truth_seeds=2, select_steps=10, select_lr=0.25, select_decay=0.9, mixing_grid_steps=20)
    return config.Params(**{**base, **change})


def test_params_reject_inconsistent_sizes():
    _params()
    with pytest.raises(ValidationError, match="n1=300 cannot exceed revealed=200"):
        _params(n1=300)
    with pytest.raises(ValidationError, match="targets must exceed n1"):
        _params(targets=[150, 800])
    with pytest.raises(ValidationError, match="claim_target"):
        _params(claim_target=1200)
    with pytest.raises(ValidationError, match="extra"):
        _params(n2=5)


def test_projektor_end_to_end_is_deterministic_and_selects_on_the_simplex(market):
    from paper09 import experiment as ex
    from paper09 import projektor

    scale = projektor.feature_scale(market.x_val)
    pilots = ex.train_sets(market, sources.simplex_grid(3, 2), [50, 100], 1, 1.0, 0, ex.PILOT, revealed_only=True,
                           with_ot=True, scale=scale)
    assert len(pilots) == 12 and pilots["ot"].gt(0).all()
    model = ex.fit_projektor(market, pilots, 50, 100, "log_error", scale, 1.0, draws=1)
    mixtures = np.array([[1 / 3, 1 / 3, 1 / 3], [0.1, 0.9, 0.0]])
    first = ex.predict_projektor(model, mixtures, [400], "log_error", seed=0)
    again = ex.predict_projektor(model, mixtures, [400], "log_error", seed=0)
    assert first["predicted"].tolist() == again["predicted"].tolist()
    assert first["predicted"].between(0, 1).all()
    picked, path = model.select(400, np.full(3, 1 / 3), steps=3, lr=0.25, decay=0.9, rng=ex.rng(0, 9), maximize=False)
    assert picked.sum() == pytest.approx(1.0) and np.all(picked >= 0) and len(path) == 3
    # a progress callable wraps the OT loops, sees their length and leaves the numbers alone
    calls = []

    def progress(iterable, desc="", total=None):
        calls.append((desc, total))
        for item in iterable:
            calls.append("item")
            yield item

    shown = ex.predict_projektor(model, mixtures, [400], "log_error", seed=0, progress=progress)
    assert shown["predicted"].tolist() == first["predicted"].tolist()
    assert calls == [("projektor predictions (OT)", 2), "item", "item"]
    calls.clear()
    picked_shown, path_shown = model.select(400, np.full(3, 1 / 3), steps=3, lr=0.25, decay=0.9, rng=ex.rng(0, 9),
                                            maximize=False, progress=progress)
    assert calls[0] == ("select: OT gradient steps", 3) and calls.count("item") == len(path_shown) == 3
    np.testing.assert_array_equal(picked_shown, picked)
