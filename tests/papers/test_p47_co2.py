"""Paper 47 (CO2): the outer update, one-round staleness of the asynchronous average, DDP
exactness, the overlap model and the time-to-target read-out. Multi-process runs: 2 gloo ranks,
a 1-layer model, seconds."""

import math

import numpy as np
import pytest
import torch

from paper47 import co2, config
from shared import distributed, zoo

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = zoo.ModelSpec(attention="mha", vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16)
zoo.build(TINY)  # import transformers once here: the forked ranks inherit it instead of importing it each


def _tokens(n, seed):
    return np.random.default_rng(seed).integers(0, 64, size=n).astype(np.uint16)


def _spec(**kw):
    base = dict(model=TINY, steps=8, batch_size=2, seq_len=8, lr=1e-2, eval_every=4, eval_batches=2, grad_clip=0.0)
    return co2.RunSpec(**(base | kw))


def test_outer_update_by_hand():
    a, d, m = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.4, -0.2, 0.02]), torch.tensor([0.1, 0.1, -0.1])
    # m = 0.5 m + d / 2 = [0.25, -0.05, -0.04]; a - 1.0 m
    new_a, new_m = co2.outer_update(a, d, m, beta=0.5, gap_penalty=2.0)
    assert torch.allclose(new_m, torch.tensor([0.25, -0.05, -0.04]))
    assert torch.allclose(new_a, torch.tensor([0.75, 2.05, 3.04]))
    # clipping phi = 0.045 bounds the momentum (the clipped value is what is applied and carried)
    new_a, new_m = co2.outer_update(a, d, m, beta=0.5, gap_penalty=2.0, clip=0.045, lr=2.0)
    assert torch.allclose(new_m, torch.tensor([0.045, -0.045, -0.04]))
    assert torch.allclose(new_a, torch.tensor([0.91, 2.09, 3.08]))
    # lambda = 1, beta = 0, lr = 1: the anchor moves by the whole pseudo-gradient
    new_a, _ = co2.outer_update(a, d, torch.zeros(3), beta=0.0)
    assert torch.allclose(new_a, a - d)


def test_released_clamp_is_a_no_op_and_ours_is_not():
    m = torch.tensor([-0.5, 0.2])
    kept = m.clone()
    torch.clamp(kept, min=-0.01, max=0.01)  # the released _co2_clip: result dropped
    assert torch.equal(kept, m)
    assert co2.outer_update(torch.zeros(2), m, torch.zeros(2), beta=0.0, clip=0.01)[1].abs().max() == 0.01


def _record(algo, spec):
    def worker():
        return co2.train_rank(algo, spec, _tokens(4000, 1), _tokens(800, 2))

    out = distributed.spawn(worker, 2, timeout_s=60)
    as_torch = lambda v: torch.from_numpy(v) if isinstance(v, np.ndarray) else v  # noqa: E731
    for r in out:
        r["final"] = as_torch(r["final"])
        r["rounds"] = [{k: as_torch(v) for k, v in rd.items()} for rd in r.get("rounds", [])]
    return out


@pytest.mark.parametrize("reference", ["current", "own"])
def test_co2_average_is_exactly_one_round_stale(reference):
    algo = co2.Algo("co2", tau=2, outer_momentum=0.5, gap_penalty=2.0, clip=0.05, reference=reference)
    out = _record(algo, _spec(steps=8, record=True))
    r0, r1 = out
    rounds = r0["rounds"]
    assert len(rounds) == 4 and rounds[0]["arrived"] is None  # nothing has arrived after the first round
    momentum = torch.zeros_like(rounds[0]["anchor"])
    for t in range(1, 4):
        # what arrived at the end of round t is the mean of the ranks' parameters at the end of round t-1
        mean_prev = (r0["rounds"][t - 1]["local"] + r1["rounds"][t - 1]["local"]) / 2
        assert torch.allclose(rounds[t]["arrived"], mean_prev, atol=1e-7, rtol=0)
        assert torch.equal(r0["rounds"][t]["arrived"], r1["rounds"][t]["arrived"])
        # the anchor of round t+1 is the outer update with the average of round t-1, measured from the
        # current anchor (the notes' x_old) or from round t-1's own anchor
        ref = rounds[t]["anchor"] if reference == "current" else rounds[t - 1]["anchor"]
        new_anchor, momentum = co2.outer_update(rounds[t]["anchor"], ref - rounds[t]["arrived"],
                                                momentum, beta=0.5, gap_penalty=2.0, clip=0.05)
        following = rounds[t + 1]["anchor"] if t + 1 < 4 else None
        if following is not None:
            assert torch.equal(following, new_anchor)
    # the ranks end on the same model
    assert torch.equal(r0["final"], r1["final"])


def test_local_sgd_with_tau_one_equals_ddp_sgd():
    spec = _spec(inner="sgd", steps=6, eval_every=6, record=True)
    ddp = _record(co2.Algo("ddp"), spec)
    local = _record(co2.Algo("local", tau=1), spec)
    slowmo = _record(co2.Algo("slowmo", tau=1, outer_momentum=0.0), spec)
    assert torch.equal(ddp[0]["final"], ddp[1]["final"])
    assert torch.allclose(local[0]["final"], ddp[0]["final"], atol=1e-6, rtol=0)
    # SlowMo with beta = 0 and alpha = 1 is Local-SGD
    assert torch.allclose(slowmo[0]["final"], local[0]["final"], atol=1e-6, rtol=0)


def test_overlap_model():
    assert co2.overlap_exposed_fraction("ddp", 3.0, 1) == pytest.approx(0.75)
    assert co2.overlap_exposed_fraction("slowmo", 3.0, 4) == pytest.approx(3 / 7)
    assert co2.overlap_exposed_fraction("co2", 3.0, 4) == 0.0  # T_ar <= tau T_comp: fully hidden
    assert co2.overlap_exposed_fraction("co2", 6.0, 4) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="kind='x' is not allowed"):
        co2.overlap_exposed_fraction("x", 1.0, 1)


def test_link_for_ratio_hits_the_ratio():
    link = co2.link_for_ratio(3.0, 0.01, 1_000_000, 4, latency_s=1e-4)
    assert link.all_reduce_seconds(1_000_000, 4) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="latencies alone exceed"):
        co2.link_for_ratio(0.1, 0.001, 1000, 4, latency_s=1e-3)


def test_time_to_target_interpolates():
    assert co2.time_to_target([0, 1, 2], [5.0, 4.0, 3.0], 3.5) == pytest.approx(1.5)
    assert co2.time_to_target([0, 1], [5.0, 4.0], 3.0) == math.inf


def test_bad_algorithms_and_params_fail_in_one_line():
    with pytest.raises(ValueError, match="Algo.kind='gossip' is not allowed"):
        co2.Algo("gossip")
    with pytest.raises(ValueError, match="Algo.reference='x' is not allowed"):
        co2.Algo("co2", reference="x")
    with pytest.raises(ValueError, match=r"Algo.tau: must be >= 1 \(ddp: 1\)"):
        co2.Algo("ddp", tau=4)
    import yaml

    from shared.paths import CONF

    base = yaml.safe_load((CONF / "p47" / "base.yaml").read_text())
    config.Params(**base)
    with pytest.raises(ValueError, match="must be multiples of tau=4"):
        config.Params(**(base | {"steps": 30}))
    with pytest.raises(ValueError, match="claim_ratio: 2.0 must be one of ratios"):
        config.Params(**(base | {"claim_ratio": 2.0}))
