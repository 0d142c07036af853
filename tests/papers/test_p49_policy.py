"""Paper 49 (POLCA): the controller's state machine on hand-made power series, the training row,
and the config's one-line errors."""

import numpy as np
import pytest
import yaml

from paper49 import config
from paper49 import power as P
from shared.paths import CONF

CFG = P.ControlConfig(t1=0.85, t2=0.95, hysteresis=0.05, f_low=0.7, f_all=0.6, polca_delay_s=0.0,
                      capping_delay_s=3.0, brake_f=0.5, brake_s=10.0, budget_window=1)


def test_polca_thresholds_and_hysteresis():
    fracs = [0.5, 0.86, 0.84, 0.81, 0.79, 0.96, 0.93, 0.91, 0.89, 0.79]
    f, ctl = P.replay("polca", fracs, cfg=CFG)
    expected = [
        (1.0, 1.0),  # 0.50: below T1
        (0.7, 1.0),  # 0.86 > T1: low priority capped
        (0.7, 1.0),  # 0.84: below T1 but >= T1 - h = 0.80: held
        (0.7, 1.0),  # 0.81: still >= 0.80
        (1.0, 1.0),  # 0.79 < T1 - h: released
        (0.6, 0.6),  # 0.96 > T2: every server capped
        (0.6, 0.6),  # 0.93 >= T2 - h = 0.90: held
        (0.6, 0.6),  # 0.91 >= 0.90: held
        (0.7, 1.0),  # 0.89 < 0.90: down to level 1 (>= T1 - h)
        (1.0, 1.0),  # 0.79 < 0.80: released
    ]
    np.testing.assert_allclose(f, expected)
    assert ctl.brakes == 0 and ctl.violations == 0


def test_brake_fires_once_holds_and_counts_violations():
    fracs = [0.9, 1.05, 1.02, 0.5, 0.5] + [0.5] * 8 + [1.1, 0.5]
    f, ctl = P.replay("none", fracs, tick_s=1.0, cfg=CFG)
    assert ctl.brakes == 2 and ctl.violations == 3  # t=2 fires (holds to 12), t=3 within it, t=14 fires again
    assert np.all(f[1:11] == 0.5)  # ticks ending at 2..11 s set the brake clock
    assert np.all(f[11:13] == 1.0) and np.all(f[13] == 0.5)
    assert np.all(f[0] == 1.0)  # no control otherwise


def test_unlimited_never_brakes_and_capping_acts_late():
    _, ctl = P.replay("unlimited", [1.2, 1.3], cfg=CFG)
    assert ctl.brakes == 0 and ctl.violations == 2
    f, ctl = P.replay("capping", [0.97, 0.97, 0.97, 0.97, 0.5, 0.5, 0.5, 0.5], tick_s=1.0, cfg=CFG)
    # decided at t=1, in effect 3 s later (t=4); released at t=5, in effect at t=8
    np.testing.assert_allclose(f[:, 1], [1, 1, 1, 0.6, 0.6, 0.6, 0.6, 1.0])
    assert np.all(f[:, 0] == f[:, 1])  # one threshold, every server alike
    f, _ = P.replay("polca", [0.9, 0.5], cfg=CFG)  # low priority only above T1, at once
    np.testing.assert_allclose(f, [(0.7, 1.0), (1.0, 1.0)])


def test_budget_window_averages_the_reading():
    cfg = P.ControlConfig(budget_window=4)
    _, ctl = P.replay("none", [0.9, 0.9, 0.9, 1.25], cfg=cfg)  # one hot tick: mean 0.9875
    assert ctl.brakes == 0 and ctl.violations == 0
    _, ctl = P.replay("none", [0.9, 0.9, 1.1, 1.25], cfg=cfg)
    assert ctl.brakes == 1


def test_controller_errors_name_the_key():
    with pytest.raises(ValueError, match="policy='fast'"):
        P.Controller("fast")
    with pytest.raises(ValueError, match="t1 <= t2"):
        P.ControlConfig(t1=0.96, t2=0.95)
    with pytest.raises(ValueError, match="f_low"):
        P.ControlConfig(f_low=1.5)


def test_training_swings_leave_little_headroom():
    power = P.GpuPower()
    prof = P.TrainingProfile(0.95, 0.6, 2.0, 0.7)
    args = dict(gpus=8, power=power, profile=prof, other_w=0.0, duration_s=40.0, tick_s=0.25, dt_s=0.05)
    budget = 10 * 8 * 700.0
    free = P.training_row(10, ctl=P.Controller("unlimited"), budget_w=budget, **args)
    assert free["watts"].max() / budget == pytest.approx(0.95)  # synchronous: the row peaks with its servers
    assert free["work"] == pytest.approx(10 * 40.0 / 2.0)  # uncapped: one iteration per period per server
    over = P.training_row(12, ctl=P.Controller("polca", CFG), budget_w=budget, **args)
    base = P.training_row(12, ctl=P.Controller("unlimited"), budget_w=budget, **args)
    assert over["work"] < 0.95 * base["work"]  # +20%: the T2 cap slows every compute phase


def test_config_composes_and_rejects_bad_values():
    base = yaml.safe_load((CONF / "p49" / "base.yaml").read_text())
    p = config.Params(**base)
    assert p.claim_oversub in p.oversub_grid
    with pytest.raises(ValueError, match="t1"):
        config.Params(**base | {"t1": 0.99})
    with pytest.raises(ValueError, match="claim_oversub"):
        config.Params(**base | {"claim_oversub": 0.33})
    with pytest.raises(ValueError, match="gpu"):
        config.Params(**base | {"gpu": "B200"})
