"""Paper 54 (DistZO2 / ZO2 / MeZO): seed replay, exactness of PertP / DDP / 2D / offload against serial MeZO."""

import math

import pytest
import torch

from paper54 import config, dist, finetune, memory, mezo, offload
from shared import zoo

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = zoo.ModelSpec(attention="gqa", vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                     max_seq_len=32)
CFG = mezo.ZOConfig(eps=1e-3, lr=1e-2, seed=3)


def make_model():
    return zoo.build(SPEC, seed=0).eval()


def batches(n=3, rows=4, seq=16):
    return mezo.random_batches(SPEC.vocab_size, n, rows, seq, seed=1)


@pytest.fixture(scope="module")
def serial():
    model = make_model()
    mezo.lm_loss(model, *batches()[0])  # lazy imports done before any fork
    history = mezo.train_serial(model, batches(), CFG, 6)
    return mezo.flat(model), history


def test_noise_is_replayed_from_the_seed_and_order_free():
    t = torch.zeros(5, 7)
    assert torch.equal(mezo.noise(t, 11), mezo.noise(t, 11)) and not torch.equal(mezo.noise(t, 11), mezo.noise(t, 12))
    a, b = [torch.ones(3, 4), torch.ones(6)], [torch.ones(3, 4), torch.ones(6)]
    mezo.apply(list(enumerate(a)), 0, 5, [0.1])
    mezo.apply(list(reversed(list(enumerate(b)))), 0, 5, [0.1])  # another order, same per-tensor noise
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_mezo_step_restores_then_updates_along_z():
    model = make_model()
    before = mezo.flat(model)
    x, y = batches()[0]
    lp, lm, g = mezo.mezo_step(mezo.indexed(model), lambda: mezo.lm_loss(model, x, y), CFG, 0)
    assert g == (lp - lm) / (2 * CFG.eps)
    z = torch.cat([mezo.noise(p, mezo.z_seed(CFG.seed, 0, i)).flatten() for i, p in enumerate(model.parameters())])
    assert torch.allclose(mezo.flat(model), before - CFG.lr * g * z, atol=1e-6)


def test_pertp_is_bit_identical_to_serial(serial):
    res = dist.run("pertp", make_model, batches(), CFG, 6)
    assert res["world"] == 2 and res["ranks_agree"]
    assert torch.equal(res["params"], serial[0])
    assert [h["g"] for h in res["history"]] == [h["g"] for h in serial[1]]


def test_ddp_with_a_scalar_all_reduce_equals_serial_on_the_concatenated_batch(serial):
    res = dist.run("ddp", make_model, batches(), CFG, 6)
    assert res["ranks_agree"] and float((res["params"] - serial[0]).abs().max()) <= 1e-6


def test_2d_on_four_processes_equals_serial(serial):
    res = dist.run("2d", make_model, batches(), CFG, 6)
    assert res["world"] == 4 and res["ranks_agree"] and float((res["params"] - serial[0]).abs().max()) <= 1e-6


def test_offloaded_zo2_matches_serial_and_blockwise_loss_is_the_loss():
    model = make_model()
    x, y = batches()[0]
    with torch.no_grad():
        assert float(offload.blockwise_loss(model, x, y)) == float(mezo.lm_loss(model, x, y))
    # the tied embedding/head gets one extra restore/perturb pair in the dual forward: equal to
    # float rounding (at a fine-tuning lr), not bit for bit (the other tensors: the serial sequence)
    cfg = mezo.ZOConfig(eps=1e-3, lr=1e-4, seed=3)
    reference = make_model()
    mezo.train_serial(reference, batches(), cfg, 6)
    for offloaded, bandwidth in ((True, 2e8), (False, math.inf)):
        model = make_model()
        zo = offload.ZO2(model, cfg, offload=offloaded, pool=2, bandwidth=bandwidth)
        for t in range(6):
            zo.step(*batches()[t % 3], t)
        zo.finish()
        assert float((mezo.flat(model) - mezo.flat(reference)).abs().max()) <= 1e-6
    deep = zoo.ModelSpec(**(SPEC.model_dump() | {"n_layers": 4}))
    resident, streamed = (offload.ZO2(zoo.build(deep), CFG, offload=o, pool=2).device_bytes() for o in (False, True))
    layer = sum(q.numel() * 4 for q in zoo.build(deep).model.layers[0].parameters())
    assert resident - streamed == 2 * layer  # 4 layers resident vs a pool of 2


def test_schedule_model_limits():
    # no link cost: the compute chain; a slow link: every block's upload in turn, then the last write-back
    assert offload.schedule_seconds(1, 2, 3, 0.0, 4, 3) == 1 + 4 * 2 + 3
    assert math.isclose(offload.schedule_seconds(0, 1, 1, 10.0, 4, 3), 4 * 10 + 1 + 10)


def test_zo2_fit_extrapolates_to_175b():
    fit = memory.fit_zo2(memory.zo2_table())
    assert abs(fit["holdout_rel_err"]) < 0.05 and 3 < fit["blocks_on_device"] < 5 and fit["r2"] > 0.99


def test_mezo_peak_memory_is_inference_like():
    # big enough (~4M parameters) that AdamW's 3x parameter bytes dwarf a forked child's RSS noise (~20 MB)
    spec = zoo.ModelSpec(attention="gqa", vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2,
                         d_ff=704, max_seq_len=32)
    peaks = memory.measure_peaks(spec, 1, 16, seed=0).set_index("method")["peak_bytes"]
    assert peaks["mezo"] < 0.5 * peaks["adamw"] and peaks["mezo"] < 1.5 * peaks["inference"]


def test_lr_sweep_scores_on_the_train_split_and_leaves_the_model_untouched():
    model, data = make_model(), batches(n=4)
    before = mezo.flat(model)
    lr, rows = finetune.sweep_lr(model, data, data[:2], [1e-4, 1e-2, 50.0], steps=4, eps=1e-3, seed=0)
    assert torch.equal(mezo.flat(model), before)  # each candidate trains a copy
    assert [r["lr"] for r in rows] == [1e-4, 1e-2, 50.0]
    best = min(rows, key=lambda r: r["train_loss_after"])
    assert lr == best["lr"] != 50.0  # a diverging lr is never chosen
    for r in rows:  # the score is the loss of a copy trained with that lr, on the given (train) batches
        trial = make_model()
        finetune.finetune(trial, data, 4, "mezo", r["lr"], 1e-3, 0)
        assert mezo.eval_loss(trial, data[:2]) == r["train_loss_after"]


def test_first_order_reference_runs_on_the_same_batches_and_lowers_the_loss():
    data = batches(n=12)
    model = make_model()
    curve, rows = finetune.finetune(model, data, 12, "adamw", 3e-3, 1e-3, 0, held=data[:3], eval_every=6)
    assert [c["step"] for c in curve] == [0, 6, 12] and curve[-1]["heldout_loss"] < curve[0]["heldout_loss"] - 0.05
    fresh = make_model()
    assert rows[0]["train_loss"] == pytest.approx(float(mezo.lm_loss(fresh, *data[0])), abs=1e-12)  # batch 0 first
    z_curve, z_rows = finetune.finetune(make_model(), data, 12, "mezo", 1e-3, 1e-3, 0, held=data[:3], eval_every=6)
    assert len(z_rows) == len(rows) and "g" in z_rows[0]


def test_errors_name_the_key():
    with pytest.raises(ValueError, match="method: must be mezo or adamw"):
        finetune.finetune(make_model(), batches(), 1, "sgd", 1e-3, 1e-3, 0)
    with pytest.raises(ValueError, match="conv_sweep_lrs: needs at least one"):
        finetune.sweep_lr(make_model(), batches(), batches(), [], 1, 1e-3, 0)
    with pytest.raises(ValueError, match="eps: must be > 0"):
        mezo.ZOConfig(eps=0)
    with pytest.raises(ValueError, match="zo_grad: needs as many"):
        mezo.zo_grad([1.0], [], 1e-3)
    with pytest.raises(ValueError, match="strategy: 'tp' is not allowed"):
        dist.Layout.of("tp")
    with pytest.raises(ValueError, match="batch: 3 rows do not split into 2"):
        dist.shard(torch.zeros(3, 2), 0, 2)
    with pytest.raises(ValueError, match="pool: a device pool needs >= 2"):
        offload.ZO2(make_model(), CFG, pool=1)


def test_params_validation(smoke_params):
    import yaml

    tree = yaml.safe_load(smoke_params.read_text())["p54"]
    config.Params(**tree)
    with pytest.raises(ValueError, match="dist_batch: must be even"):
        config.Params(**(tree | {"dist_batch": 3}))
    with pytest.raises(ValueError, match="conv_sweep_lrs: every learning rate must be > 0"):
        config.Params(**(tree | {"conv_sweep_lrs": [1e-4, 0.0]}))
    with pytest.raises(ValueError, match="dist_strategies: must include serial"):
        config.Params(**(tree | {"dist_strategies": ["pertp", "ddp"]}))
