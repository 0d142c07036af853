"""Paper 06: the self-supervised prototype pruning metric on digits."""

import numpy as np
import pytest
from pydantic import ValidationError

from paper06 import config, prototypes
from shared import data


def test_prototype_difficulty_is_distance_to_the_nearest_centroid():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    pts = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres] + [[[5.0, 4.0]]])
    d = prototypes.prototype_difficulty(pts, n_clusters=2, seed=0)
    assert np.argmax(d) == len(pts) - 1  # the outlier is the hardest
    assert d[:-1].max() < 0.5 < d[-1]


def test_supervised_prototype_difficulty_uses_the_own_class_centroid():
    emb = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(prototypes.supervised_prototype_difficulty(emb, labels), [1.0, 1.0, 2.0, 2.0])


def test_unsupervised_embedding_is_on_the_unit_sphere():
    x = np.random.default_rng(1).standard_normal((40, 10))
    emb = prototypes.unsupervised_embedding(x, 4, seed=0)
    assert emb.shape == (40, 4)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0)
    with pytest.raises(ValueError, match="n_components"):
        prototypes.unsupervised_embedding(x, 11, seed=0)


def test_kept_indices_ends_and_sizes():
    d = np.array([5.0, 1.0, 3.0, 4.0, 2.0])
    rng = np.random.default_rng(0)
    assert list(prototypes.kept_indices(d, 0.4, "hard", rng)) == [0, 3]
    assert list(prototypes.kept_indices(d, 0.4, "easy", rng)) == [1, 4]
    assert len(prototypes.kept_indices(d, 0.6, None, rng)) == 3
    with pytest.raises(ValueError, match="keep_fraction"):
        prototypes.kept_indices(d, 0.0, "hard", rng)


def test_el2n_is_an_error_norm():
    split = data.digits(0.25, 0)
    x, y = split.x_train[:300], split.y_train[:300]
    score = prototypes.el2n_difficulty(x, y, c=1.0, seed=0, folds=3)
    assert score.shape == (300,)
    assert score.min() >= 0.0 and score.max() <= np.sqrt(2) + 1e-9
    assert np.median(score) < 0.5  # most digits are easy for logistic regression


def test_pruning_curves_on_digits():
    curves = prototypes.pruning_curves(
        lambda seed: data.digits(0.25, seed), [0.5, 1.0], [0], embedding_dim=16, n_clusters=10, logreg_c=1.0
    )
    assert set(curves["arm"]) == {"random", "prototype_hard", "prototype_easy", "supervised_prototype_hard", "el2n_hard"}
    assert len(curves) == 5 + 1  # every arm at f = 0.5, the full set once
    full = prototypes.arm_accuracy(prototypes.mean_curves(curves), "random", 1.0)
    assert full > 0.9
    assert curves["accuracy"].between(0.0, 1.0).all()
    assert (curves.loc[curves["keep_fraction"] == 0.5, "n_kept"] == round(0.5 * 1347)).all()


def test_pruning_curves_small_initial_set():
    curves = prototypes.pruning_curves(
        lambda seed: data.digits(0.25, seed), [0.5], [0], 16, 10, 1.0,
        arms=[("random", None), ("prototype", "easy")], train_fraction=0.1,
    )
    assert (curves["n_total"] == round(0.1 * 1347)).all()
    assert (curves["n_kept"] == round(0.5 * round(0.1 * 1347))).all()


def test_params_reject_a_claim_cell_off_the_grid():
    import yaml

    from shared.paths import CONF

    base = yaml.safe_load((CONF / "p06" / "base.yaml").read_text())
    config.Params(**base)  # the defaults validate
    with pytest.raises(ValidationError, match="abundant_alpha_total"):
        config.Params(**(base | {"abundant_alpha_total": 3}))
    with pytest.raises(ValidationError, match="keep fraction"):
        config.Params(**(base | {"keep_fractions": [0.5, 1.2]}))
