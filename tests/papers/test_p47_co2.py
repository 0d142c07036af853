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


def _simulate(algo, progress, x0=0.0):
    """Run co2_round/co2_drain for len(progress) ranks by hand: each round, rank i's local steps add
    progress[i][t] to its parameters; the all-reduce is the mean of what the ranks launched the round
    before (one round stale). Returns each rank's final parameters."""
    ranks = len(progress)
    states = [co2.OuterState(anchor=torch.tensor([x0]), momentum=torch.zeros(1)) for _ in range(ranks)]
    params = [torch.tensor([x0]) for _ in range(ranks)]
    in_flight = None
    for t in range(len(progress[0])):
        arrived, sent = in_flight, []
        for i in range(ranks):
            local = params[i] + progress[i][t]
            params[i], out = co2.co2_round(algo, states[i], local, arrived)
            sent.append(out)
        in_flight = sum(sent) / ranks
    return [co2.co2_drain(algo, states[i], params[i], in_flight) for i in range(ranks)]


# two ranks, three rounds; the local steps add these amounts (round 0, 1, 2), mean 2, 20, 200
PROGRESS = [[1.0, 10.0, 100.0], [3.0, 30.0, 300.0]]


def test_co2_keeps_every_rounds_progress_by_hand():
    """alpha = 1, beta = 0, lambda = 1 (the released defaults with beta = 0). By hand, live: round 0
    ends at 1 and 3, nothing has arrived, the ranks go on from there and launch 1, 3; round 1 ends at
    11 and 33, the mean 2 replaces the launched copies: 12 and 32, launched; round 2 ends at 112 and
    332, the mean 22 replaces 12 and 32: 122 and 322, launched; the drain gives their mean 222 =
    0 + 2 + 20 + 200 on both ranks. The earlier default (current) resets the anchor to the stale
    average: 0, 0 + (2 - 0) = 2, 2 + (20 - 2) = 20, 20 + (202 - 20) = 202: round 1's 20 is lost."""
    live = _simulate(co2.Algo("co2", tau=1), PROGRESS)
    assert [float(x) for x in live] == [222.0, 222.0]
    current = _simulate(co2.Algo("co2", tau=1, reference="current"), PROGRESS)
    assert [float(x) for x in current] == [202.0, 202.0]  # the bug the review found (kept as an option)
    own = _simulate(co2.Algo("co2", tau=1, reference="own"), PROGRESS)
    assert [float(x) for x in own] == [222.0, 222.0]  # every round once, one round late


def test_live_co2_mean_follows_slowmo_on_the_fresh_average():
    """beta = 0.5, lambda = 2, alpha = 0.8, no clipping: the outer rule is linear, so the mean of the
    ranks' anchors after each round is SlowMo's update with that round's (fresh) average progress."""
    algo = co2.Algo("co2", tau=1, outer_momentum=0.5, gap_penalty=2.0, outer_lr=0.8)
    states = [co2.OuterState(anchor=torch.zeros(1), momentum=torch.zeros(1)) for _ in range(2)]
    params, in_flight = [torch.zeros(1), torch.zeros(1)], None
    slow_a, slow_m = torch.zeros(1), torch.zeros(1)
    for t in range(3):
        arrived, sent = in_flight, []
        for i in range(2):
            params[i], out = co2.co2_round(algo, states[i], params[i] + PROGRESS[i][t], arrived)
            sent.append(out)
        in_flight = sum(sent) / 2
        fresh = slow_a + (PROGRESS[0][t] + PROGRESS[1][t]) / 2
        slow_a, slow_m = co2.outer_update(slow_a, slow_a - fresh, slow_m, beta=0.5, gap_penalty=2.0, lr=0.8)
        assert torch.allclose(in_flight, slow_a, atol=0, rtol=1e-6)
    assert not torch.allclose(states[0].anchor, states[1].anchor)  # the ranks themselves differ until averaged


@pytest.mark.parametrize("reference", co2.REFERENCES)
def test_co2_training_is_co2_round_with_one_round_stale_average(reference):
    algo = co2.Algo("co2", tau=2, outer_momentum=0.5, gap_penalty=2.0, clip=0.05, reference=reference)
    out = _record(algo, _spec(steps=8, record=True))
    r0, r1 = out
    assert len(r0["rounds"]) == 4 and r0["rounds"][0]["arrived"] is None  # nothing has arrived after round 0
    states = [co2.OuterState(anchor=_initial(), momentum=torch.zeros_like(_initial())) for _ in range(2)]
    for t in range(4):
        for i, r in enumerate(out):
            rd = r["rounds"][t]
            if t:  # what arrived at the end of round t is the mean of what the ranks launched at the end of round t-1
                mean_prev = (r0["rounds"][t - 1]["sent"] + r1["rounds"][t - 1]["sent"]) / 2
                assert torch.allclose(rd["arrived"], mean_prev, atol=1e-7, rtol=0)
            # the rank's parameters after the round are co2_round's, replayed from the recorded inputs
            new, send = co2.co2_round(algo, states[i], rd["local"], rd["arrived"])
            assert torch.allclose(rd["params"], new, atol=1e-6, rtol=0)
            assert torch.allclose(rd["sent"], send, atol=1e-6, rtol=0)
    assert torch.equal(r0["final"], r1["final"])  # the ranks end on the same model


def _initial():
    return torch.nn.utils.parameters_to_vector(zoo.build(TINY, seed=0).parameters()).detach().clone()


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
