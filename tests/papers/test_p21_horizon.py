"""Paper 21 (Horizon-LM): the streamed engine against autograd, its memory invariants, the baselines."""

import copy

import pytest
import torch
import yaml

from paper21 import config, experiment, horizon
from shared import trainer, zoo
from shared.paths import CONF
from shared.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, V = 2, 16, 256


def spec(layers: int = 3, tie: bool = True) -> zoo.ModelSpec:
    return zoo.ModelSpec(attention="gqa", vocab_size=V, d_model=32, n_layers=layers, n_heads=4, n_kv_heads=2, d_ff=64,
                         max_seq_len=32, tie_embeddings=tie)  # fmt: skip


def batches(n: int = 3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)) for _ in range(n)]


def cfg(steps: int = 3, clip: float = 0.0) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=B, seq_len=T, lr=1e-2, grad_clip=clip, warmup_steps=1, log_every=1)


@pytest.mark.parametrize("tie", [True, False])
def test_gradients_equal_autograd(tie):
    model = zoo.build(spec(tie=tie), seed=0)
    errors = experiment.gradient_errors(model, batches()[0], cfg())
    assert len(errors) == len(list(model.parameters()))
    assert errors["max_abs_grad"].min() > 0  # every tensor got a gradient
    assert errors["rel_err"].max() <= 1e-6


@pytest.mark.parametrize("clip,overlap,where", [(0.0, True, "host"), (0.0, False, "device"), (0.5, True, "host")])
def test_training_equals_the_standard_trainer(clip, overlap, where):
    data, c = batches(), cfg(clip=clip)
    reference = zoo.build(spec(), seed=0)
    engine_model, offload_model = copy.deepcopy(reference), copy.deepcopy(reference)
    history = trainer.train(reference, data, c, device="cpu", progress=lambda it, **_: it).history
    engine = horizon.HorizonEngine(engine_model, c, checkpoints=where, overlap=overlap)
    losses = horizon.run_steps(engine, data, c.steps)
    engine.close()
    horizon.run_steps(horizon.OffloadTrainer(offload_model, c), data, c.steps)
    assert max(abs(a - b) for a, b in zip(losses, history["train_loss"])) <= 1e-6
    assert experiment.max_abs_diff(reference, engine_model) <= 1e-6
    assert experiment.max_abs_diff(reference, offload_model) <= 1e-6
    assert all(p.grad is None for p in engine_model.parameters())  # the gradient slab is released after the steps


def test_device_peak_is_flat_in_depth_with_host_checkpoints():
    def peak(layers, where):
        engine = horizon.HorizonEngine(zoo.build(spec(layers), seed=0), cfg(), checkpoints=where, overlap=False)
        horizon.run_steps(engine, batches(), 2)
        return engine.device_ledger.peak

    assert peak(2, "host") == peak(6, "host")
    # on the device, each layer boundary adds one hidden state: B x T x d fp32
    assert peak(6, "device") - peak(2, "device") == 4 * B * T * 32 * 4


def test_standard_device_bytes_grows_with_depth():
    x, y = batches()[0]
    small, big = (horizon.standard_device_bytes(zoo.build(spec(n), seed=0), x, y, cfg()) for n in (2, 4))
    per_layer = zoo.param_counts(spec(4))["total"] - zoo.param_counts(spec(2))["total"]
    assert big["params"] - small["params"] == 4 * per_layer
    assert big["optimizer"] == 2 * big["params"] and big["grads"] == big["params"]
    assert big["activations"] > small["activations"] > 0


def test_ledger_counts_each_storage_once():
    ledger = horizon.ByteLedger()
    t = torch.zeros(10)
    ledger.hold("a", [t, t[:5]])
    ledger.hold("b", [t, torch.zeros(3)])
    assert ledger.current == 40 + 12
    ledger.drop("b")
    assert ledger.current == 40 and ledger.peak == 52


def test_engine_errors():
    model = zoo.build(spec(), seed=0)
    with pytest.raises(ValueError, match="checkpoints: 'host' or 'device', got 'disk'"):
        horizon.HorizonEngine(model, cfg(), checkpoints="disk")
    bf16 = TrainConfig(steps=1, batch_size=B, seq_len=T, dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype: the engine trains in float32"):
        horizon.HorizonEngine(model, bf16)


def test_params_match_the_config_and_refuse_bad_values():
    base = yaml.safe_load((CONF / "p21" / "base.yaml").read_text())
    assert set(base) == set(config.Params.model_fields)
    p = config.Params(**base)
    with pytest.raises(ValueError, match="depths: distinct positive layer counts in increasing order"):
        config.Params(**(base | {"depths": [4, 2]}))
    with pytest.raises(ValueError, match="seq_len: 512 exceeds model.max_seq_len=256"):
        config.Params(**(base | {"seq_len": 512}))
    moe = p.model.model_dump() | {"ffn": "moe", "n_experts": 4, "n_experts_per_token": 2, "d_expert": 64}
    with pytest.raises(ValueError, match="model: the engine streams Llama decoder layers"):
        config.Params(**(base | {"model": moe}))



def test_data_parallel_on_two_ranks_equals_one_engine_on_the_full_batch(monkeypatch):
    from paper21 import dp
    from shared import distributed

    g = torch.Generator().manual_seed(2)
    data = [(torch.randint(0, V, (4, T), generator=g), torch.randint(0, V, (4, T), generator=g)) for _ in range(3)]
    c = cfg()
    single = zoo.build(spec(), seed=0)
    engine = horizon.HorizonEngine(single, c)
    losses = horizon.run_steps(engine, data, c.steps)
    engine.close()
    # the worker as one rank is the single engine, bit for bit (recording step 1's gradients changes nothing)
    one = distributed.spawn(dp.worker, 1, args=(spec(), 0, c, data), kwargs={"record_grads": True})[0]
    assert torch.equal(one["params"], torch.cat([q.detach().reshape(-1) for q in single.parameters()]))
    assert one["losses"] == losses and len(one["grads"]) >= 3  # embedding, layers, head: stage by stage
    results = distributed.spawn(dp.worker, 2, args=(spec(), 0, c, data), kwargs={"record_grads": True})  # 2 rows per rank
    check = distributed.dp_agreement(results, one, distributed.adamw_stable_mask(spec(), 0, data[0]))
    assert [r["world"] for r in results] == [2, 2] and check["ranks_agree"]
    assert 0 < check["grad_max_rel_err"] <= 1e-5  # the all-reduced mean of the shards: fp32 summation order only
    assert check["max_abs_diff_outside_eps"] <= check["max_abs_diff_vs_single"] <= 1e-5
    assert results[0]["losses"] == pytest.approx(losses, abs=1e-6)
    # the old behaviour (no all-reduce): each rank follows its own shard, the gradients are the shard's
    monkeypatch.setattr(dp, "reduce_mean", lambda tensors: None)
    alone = distributed.dp_agreement(distributed.spawn(dp.worker, 2, args=(spec(), 0, c, data), kwargs={"record_grads": True}), one)
    assert not alone["ranks_agree"] and alone["max_abs_diff_vs_single"] > 1e-4 and alone["grad_max_rel_err"] > 1e-2


def test_data_parallel_errors_name_the_key():
    from paper21 import dp

    with pytest.raises(ValueError, match="batch_size: 3 rows do not split into 2"):
        dp.shard(torch.zeros(3, 4), 0, 2)
