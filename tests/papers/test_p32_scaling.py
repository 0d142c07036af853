import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from paper32 import config, scaling
from shared import complexity, data, timing
from shared.paths import CONF

TINY = scaling.NetConfig(stem_width=8, widths=(8,), depths=(1,), resolution=4)
SMALL = scaling.NetConfig(stem_width=32, widths=(32, 64), depths=(2, 2), resolution=8)


# ----------------------------------------------------------------------- strategies


@pytest.mark.parametrize("strategy", scaling.STRATEGIES)
def test_exponents_share_the_flops_increase(strategy):
    e_d, e_w, e_r = scaling.strategy_exponents(strategy, alpha=0.8)
    assert math.isclose(e_d + e_w + e_r, 1.0)
    d, w, r = scaling.scaling_factors(strategy, 8.0, alpha=0.8)
    assert math.isclose(d * w**2 * r**2, 8.0)  # flops ~ d w^2 r^2


def test_fast_scaling_matches_pycls_d1_w8_g8_r1():
    # pycls spells fast scaling "d1_w8_g8_r1": d = s^(1/10), w = s^(8/10/2), r = s^(1/10/2)
    d, w, r = scaling.scaling_factors("dWr", 16.0, alpha=0.8)
    assert (d, w, r) == pytest.approx((16**0.1, 16**0.4, 16**0.05))
    assert scaling.strategy_exponents("dwr", alpha=0.8) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert scaling.strategy_exponents("w", alpha=0.8) == (0.0, 1.0, 0.0)
    # alpha = 1 is width scaling, alpha = 1/3 is uniform compound scaling (Table 4)
    assert scaling.strategy_exponents("dWr", alpha=1.0) == scaling.strategy_exponents("w", alpha=0.8)
    assert scaling.strategy_exponents("dWr", alpha=1 / 3) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_ideal_activation_exponents_of_the_paper():
    acts = {s: scaling.ideal_exponents(s, alpha=0.8)["activations"] for s in scaling.STRATEGIES}
    assert acts["w"] == pytest.approx(0.5)
    assert acts["dWr"] == pytest.approx(1 - 0.8 / 2)  # s^(1 - alpha/2) = s^0.6
    assert acts["dwr"] == pytest.approx(5 / 6)
    assert acts["d"] == acts["r"] == pytest.approx(1.0)
    assert scaling.ideal_exponents("r", alpha=0.8)["params"] == 0.0


def test_unknown_strategy_and_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        scaling.strategy_exponents("x", alpha=0.8)
    with pytest.raises(ValueError, match="alpha"):
        scaling.strategy_exponents("dWr", alpha=1.5)
    with pytest.raises(ValueError, match="s:"):
        scaling.scaling_factors("w", 0.0, alpha=0.8)


# -------------------------------------------------------------------------- network


def test_scale_config_rounds_like_pycls():
    assert scaling.scale_config(SMALL, "dWr", 1.0, alpha=0.8) == SMALL
    wide = scaling.scale_config(SMALL, "w", 4.0, alpha=0.8)  # width x2 exactly
    assert (wide.stem_width, wide.widths, wide.depths, wide.resolution) == (64, (64, 128), (2, 2), 8)
    deep = scaling.scale_config(SMALL, "d", 4.0, alpha=0.8)
    assert (deep.widths, deep.depths) == ((32, 64), (8, 8))
    sharp = scaling.scale_config(SMALL, "r", 4.0, alpha=0.8)
    assert sharp.resolution == 16 and sharp.widths == SMALL.widths
    odd = scaling.scale_config(SMALL, "w", 2.0, alpha=0.8)  # 32 * sqrt(2) = 45.3 -> 48
    assert odd.widths == (48, 88) and all(w % 8 == 0 for w in odd.widths)


def test_network_runs_at_any_resolution():
    model = scaling.AnyNet(SMALL)
    for side in (8, 11, 23):
        out = model(torch.zeros(2, 1, side, side))
        assert out.shape == (2, 10)


def test_complexity_of_a_tiny_network_by_hand():
    # stem: 1->8 channels, 3x3, stride 2 on 4x4 -> 2x2; one block of two 8->8 3x3 convs at 2x2;
    # head 8->10. Flops are multiply-adds; activations the conv and linear outputs.
    cx = scaling.count_complexity(TINY)
    assert cx.flops == 8 * 4 * 9 * 1 + 2 * (8 * 4 * 9 * 8) + 8 * 10
    assert cx.activations == 8 * 4 + 2 * 8 * 4 + 10
    assert cx.params == (9 * 8 + 2 * 8) + 2 * (9 * 8 * 8 + 2 * 8) + (8 * 10 + 10)


def test_meta_counts_equal_real_cpu_counts():
    cfg = scaling.scale_config(SMALL, "dWr", 4.0, alpha=0.8)
    real = complexity.count(scaling.AnyNet(cfg), scaling.input_shape(cfg))
    assert scaling.count_complexity(cfg) == real


# ----------------------------------------------------------------------- complexity


def test_loglog_slope_recovers_a_power_law():
    s = np.array([1, 2, 4, 8, 16.0])
    assert scaling.loglog_slope(s, 3 * s**1.7) == pytest.approx(1.7)
    with pytest.raises(ValueError):
        scaling.loglog_slope([2, 2], [1, 3])


def test_measured_exponents_follow_the_complexity_model():
    # s = 1, 4, 16: width and resolution factors are exact powers of 2 (no rounding)
    table = scaling.complexity_table(SMALL, ["w", "r", "d"], [1, 4, 16], alpha=0.8)
    exps = scaling.fit_exponents(table, alpha=0.8).set_index(["strategy", "measure"])["exponent"]
    assert exps["w", "activations"] == pytest.approx(0.5, abs=0.02)
    assert exps["w", "flops"] == pytest.approx(1.0, abs=0.03)
    assert exps["r", "params"] == pytest.approx(0.0, abs=1e-9)
    assert exps["r", "activations"] == pytest.approx(1.0, abs=0.02)
    assert exps["d", "params"] == pytest.approx(1.0, abs=0.05)
    # ordering the paper is about: w << d, r in activations
    assert exps["w", "activations"] < exps["d", "activations"] - 0.3


# --------------------------------------------------------------------------- runtime


def test_runtime_table_and_correlations():
    table = scaling.runtime_table(
        TINY, ["w", "d"], [1, 4], alpha=0.8, batch_size=2, repeats=1, warmup=0, num_threads=1, device="cpu"
    )
    assert len(table) == 4
    assert (table[["forward_median_s", "train_median_s"]] > 0).all().all()
    # synthetic runtimes exactly proportional to activations: r_acts = 1 > r_flops
    synthetic = table.assign(forward_median_s=1e-6 * table["activations"], train_median_s=3e-6 * table["activations"])
    corr = scaling.runtime_correlations(synthetic)
    assert corr["train_r_activations"] == pytest.approx(1.0)
    assert corr["train_r_acts_minus_r_flops"] > 0
    with pytest.raises(ValueError, match="dtype"):
        scaling.runtime_table(TINY, ["w"], [1], 0.8, batch_size=1, repeats=1, warmup=0, num_threads=1, device="cpu", dtype="fp8")


def test_within_s_rank_correlation_isolates_activations():
    # three strategies at s = 2 and 4 with equal flops: time follows activations exactly,
    # so the rank correlation within each s is 1 for activations, whatever the flops
    rows = []
    for s in (2.0, 4.0):
        for strategy, acts, flops in (("w", 1.0, 3.0), ("dWr", 2.0, 1.0), ("d", 3.0, 2.0)):
            rows.append({"strategy": strategy, "s": s, "activations": acts * s, "flops": flops * s, "params": acts + s})
    table = pd.DataFrame(rows).assign(forward_median_s=lambda t: t["activations"], train_median_s=lambda t: t["activations"])
    corr = scaling.runtime_correlations(table)
    assert corr["train_spearman_activations_within_s"] == pytest.approx(1.0)
    assert corr["train_spearman_flops_within_s"] == pytest.approx(-0.5)  # ranks (3,1,2) vs (1,2,3)


# -------------------------------------------------------------------------- accuracy


def test_training_learns_and_is_deterministic():
    full = data.digits(test_fraction=0.5, seed=0)
    split = data.Split(full.x_train[:500], full.y_train[:500], full.x_test[:300], full.y_test[:300])
    cfg = scaling.NetConfig(stem_width=16, widths=(16, 32), depths=(1, 1), resolution=8)
    settings = scaling.TrainSettings(
        epochs=2, batch_size=32, lr=0.1, warmup_epochs=0.5, weight_decay=0.0, noise_std=0.0, test_noise_draws=1
    )
    with timing.pinned_threads(1):  # robust to a busy machine, and the same reductions both times
        first = scaling.train_and_evaluate(cfg, split, settings, seed=3)
        second = scaling.train_and_evaluate(cfg, split, settings, seed=3)
    assert first == second
    assert first > 50.0  # chance is 10 %


# ------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_every_scale_gives_valid_params(scale):
    base = yaml.safe_load((CONF / "p32" / "base.yaml").read_text())
    changes = yaml.safe_load((CONF / "p32" / f"{scale}.yaml").read_text())
    changes.pop("defaults")
    params = config.Params(**{**base, **changes})
    assert set(base) == set(config.Params.model_fields)
    assert len(params.widths) == len(params.depths)


def test_params_reject_mismatched_stages():
    base = yaml.safe_load((CONF / "p32" / "base.yaml").read_text())
    with pytest.raises(ValueError, match="widths and depths"):
        config.Params(**{**base, "depths": [1]})


@pytest.mark.gpu
def test_runtime_and_training_on_cuda():
    table = scaling.runtime_table(
        TINY, ["w", "dWr"], [1, 2], alpha=0.8, batch_size=4, repeats=2, warmup=1, num_threads=1,
        device="cuda", dtype="bfloat16",
    )
    assert (table[["forward_median_s", "train_median_s"]] > 0).all().all()
    full = data.digits(test_fraction=0.5, seed=0)
    split = data.Split(full.x_train[:200], full.y_train[:200], full.x_test[:100], full.y_test[:100])
    settings = scaling.TrainSettings(
        epochs=1, batch_size=32, lr=0.1, warmup_epochs=0.5, weight_decay=0.0, noise_std=0.1, test_noise_draws=1
    )
    assert 0.0 <= scaling.train_and_evaluate(TINY, split, settings, seed=0, device="cuda") <= 100.0
