"""Paper 04: quality buckets, pools and the vectorised SGD students."""

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from paper04 import config, pools


def test_teacher_student_buckets_have_exact_noise():
    b = pools.teacher_student(20, 200, [0.0, 0.1, 0.25], seed=3)
    assert [x.shape for x in b.x] == [(200, 20)] * 3
    for x, y, noise in zip(b.x, b.y, b.noise):
        wrong = np.mean(y != np.sign(x @ b.teacher))
        assert wrong == pytest.approx(noise)


def test_digits_buckets_are_disjoint_and_noisy():
    b = pools.digits_buckets(150, [0.0, 0.2], 0.25, seed=0)
    assert b.n_classes == 10 and b.x[0].shape == (150, 65)
    assert np.all(b.x[0][:, -1] == 1.0)  # the bias column
    rows = {tuple(r) for r in b.x[0]} & {tuple(r) for r in b.x[1]}
    assert len(rows) <= 2  # disjoint images (digits has a few exact duplicates)
    assert b.y[0].min() >= 0 and b.y[0].max() <= 9
    # each bucket has exactly its share of wrong labels: look every image up in the split it came from
    from shared import data

    split = data.digits(0.25, 0)
    key = lambda pixels: tuple(np.rint(16 * pixels).astype(int))  # noqa: E731  (raw pixels are k/16)
    truth = {key(r): label for r, label in zip(split.x_train, split.y_train)}
    mean = split.x_train.mean(axis=0)
    for x, y, noise in zip(b.x, b.y, b.noise):
        true = np.array([truth[key(r[:-1] + mean)] for r in x])
        assert np.mean(y != true) == pytest.approx(noise, abs=2 / 150)  # digits' few duplicate images aside


def test_checkpoints_hit_every_octave_exactly():
    at = pools.checkpoints(75, 75 * 2**5, 4)
    assert at[0] == 75 and at[-1] == 2400
    assert set(75 * 2 ** np.arange(6)) <= set(at.tolist())
    assert np.all(np.diff(at) > 0)
    with pytest.raises(ValueError):
        pools.checkpoints(0, 10, 1)


def test_sgd_learns_the_teacher_and_is_deterministic():
    b = pools.teacher_student(30, 200, [0.0, 0.3], seed=1)
    at = np.array([20, 200, 2000])
    ev = [pools.angle_error(b.teacher)] * 2
    data = [(b.x[0], b.y[0]), (b.x[1], b.y[1])]
    err = pools.sgd_curves(data, ev, at, 0.5, [0, 1])
    again = pools.sgd_curves(data, ev, at, 0.5, [0, 1])
    np.testing.assert_array_equal(err, again)
    assert err[0, -1] < err[0, 0] and err[0, -1] < 0.2
    assert err[1, -1] > err[0, -1]  # 30% flipped labels: a worse student


def test_softmax_sgd_learns_digits():
    b = pools.digits_buckets(300, [0.0, 0.3], 0.25, seed=0)
    ev = [pools.test_error(b.x_test, b.y_test)]
    err = pools.sgd_curves([(b.x[0], b.y[0])], ev, np.array([30, 1200]), 0.5, [0], n_classes=10)
    assert err[0, 1] < 0.15 < err[0, 0]


def test_run_grid_tables_and_best_pools():
    at = pools.checkpoints(50, 800, 1)
    runs = pools.run_grid(lambda s: pools.teacher_student(20, 100, [0.0, 0.1, 0.2], s), [0, 1], at, 0.5)
    assert set(runs["run"]) == {"bucket1", "bucket2", "bucket3", "top1", "top2", "top3"}
    one = runs[runs["run"] == "top1"]["error"].to_numpy()
    np.testing.assert_array_equal(one, runs[runs["run"] == "bucket1"]["error"].to_numpy())
    assert (runs[runs["run"] == "top3"]["pool_size"] == 300).all()
    mean = pools.mean_curves(runs)
    best = pools.best_pools(mean, [100, 800])
    assert list(best.columns) == ["n", "best_k", "top1", "top2", "top3"]
    assert best["best_k"].between(1, 3).all()


def test_params_reject_falling_noise():
    from shared.paths import CONF

    base = yaml.safe_load((CONF / "p04" / "base.yaml").read_text())
    config.Params(**base)
    with pytest.raises(ValidationError, match="noise must rise"):
        config.Params(**(base | {"noises": [0.1, 0.05]}))
    with pytest.raises(ValidationError, match="log grid"):
        config.Params(**(base | {"tau_grid": {"low": 0.0, "high": 3.0, "count": 5, "log": True}}))


def test_visit_order_is_per_epoch_permutations_and_slice_independent():
    whole = pools.visit_order(7, 3, 0, 35)
    for e in range(5):
        assert sorted(whole[7 * e : 7 * e + 7]) == list(range(7))
    np.testing.assert_array_equal(pools.visit_order(7, 3, 10, 30), whole[10:30])
    assert not np.array_equal(pools.visit_order(7, 4, 0, 35), whole)
