"""Paper 30 (MoS): the index structure of each differentiation strategy, exact budgets against
peft's LoRA, merging, pure sharing, gradients, the config and the claim metrics. Fast: a toy
model for the mechanics, the real MiniLM only for the counts."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from paper30 import bench, config, mos
from shared.paths import CONF

TARGET = r"layer\.\d+\.(query|value|dense)"
MINILM_TARGET = r".*\.layer\.\d+\..*(query|key|value|dense)"


class Block(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.query, self.value = nn.Linear(d, d), nn.Linear(d, d)
        self.dense = nn.Linear(d, ff)

    def forward(self, x):
        return self.dense(torch.tanh(self.query(x) + self.value(x)))[..., : x.shape[-1]]


class Toy(nn.Module):
    """Four blocks of three linear types (two of one shape, one of another), and a head."""

    def __init__(self, d=16, ff=32, layers=4):
        super().__init__()
        self.layer = nn.ModuleList(Block(d, ff) for _ in range(layers))
        self.classifier = nn.Linear(d, 3)

    def forward(self, x):
        for block in self.layer:
            x = x + block(x)
        return self.classifier(x)


def _toy(**kw):
    torch.manual_seed(0)
    cfg = mos.MoSConfig(target_modules=TARGET, budget_rank=kw.pop("budget_rank", 2), modules_to_save=("classifier",), **kw)
    return mos.inject(Toy(), cfg)


def _randomize_b(model):
    with torch.no_grad():
        for pool in model.mos_pools.values():
            pool.b.normal_()


def _base_params():
    base = yaml.safe_load((CONF / "p30" / "base.yaml").read_text())
    base.pop("defaults", None)
    return base


# --------------------------------------------------------------------- index structure


def test_budget_and_shapes():
    idx = mos.build_indices(6, 2, 16, shards_per_vector=4, private_fraction=0.5)
    assert idx.n_shards == 6 * 2 * 4  # LoRA r=2 on 6 layers, in shards of 1/4 vector
    assert idx.a.shape == idx.b.shape == (6, 16, 4)
    assert idx.n_private == 4 and idx.n_public == 48 - 6 * 4
    assert idx.a.min() >= 0 and idx.a.max() < idx.n_shards


def test_subset_selection_gives_each_layer_its_own_arrangement():
    on = mos.build_indices(4, 2, 8, shards_per_vector=2, subset_selection=True)
    off = mos.build_indices(4, 2, 8, shards_per_vector=2, subset_selection=False)
    assert all(np.array_equal(off.a[0], off.a[i]) for i in range(4))
    assert not all(np.array_equal(on.a[0], on.a[i]) for i in range(1, 4))
    # a layer uses every public shard before it repeats one
    for layer in on.a:
        assert len(np.unique(layer)) == min(on.n_public, layer.size)


def test_pair_dissociation_indexes_b_independently():
    bound = mos.build_indices(4, 2, 8, shards_per_vector=2, pair_dissociation=False)
    free = mos.build_indices(4, 2, 8, shards_per_vector=2, pair_dissociation=True)
    assert np.array_equal(bound.a, bound.b)
    assert not np.array_equal(free.a, free.b)
    without_subset = mos.build_indices(4, 2, 8, shards_per_vector=2, subset_selection=False, pair_dissociation=True)
    assert not np.array_equal(without_subset.a, without_subset.b)  # dissociation matters without subsets too


def test_vector_sharding_splits_vectors():
    whole = mos.build_indices(4, 2, 8, shards_per_vector=1)
    sharded = mos.build_indices(4, 2, 8, shards_per_vector=4)
    assert whole.a.shape[-1] == 1 and sharded.a.shape[-1] == 4
    assert sharded.n_shards == 4 * whole.n_shards  # same parameters: 4x the shards, 1/4 the length
    model = _toy(r=8, shards_per_vector=4)
    pool = model.mos_pools["layer_query"]
    assert pool.a.shape == (4 * 2 * 4, 16 // 4) and pool.b.shape == (4 * 2 * 4, 16 // 4)


def test_privatization_reserves_shards_for_one_layer():
    idx = mos.build_indices(4, 2, 8, shards_per_vector=2, private_fraction=0.5)
    assert idx.n_private == 2
    for layer in range(4):
        own = idx.private_ids(layer)
        assert np.array_equal(idx.a[layer].ravel()[: len(own)], own)
        assert np.array_equal(idx.b[layer].ravel()[: len(own)], own)
        others = np.concatenate([idx.a[i].ravel() for i in range(4) if i != layer] + [idx.b[i].ravel() for i in range(4) if i != layer])
        assert not np.isin(own, others).any()
    public_only = mos.build_indices(4, 2, 8, shards_per_vector=2, private_fraction=0.0)
    assert public_only.n_private == 0 and public_only.a.max() < public_only.n_public


def test_private_shards_may_fill_every_slot():
    idx = mos.build_indices(6, 2, 1, shards_per_vector=4, private_fraction=0.5)  # 4 private = r * l slots
    assert idx.a.shape == (6, 1, 4) and idx.n_private == 4
    for layer in range(6):
        assert np.array_equal(idx.a[layer].ravel(), idx.private_ids(layer))
        assert np.array_equal(idx.b[layer].ravel(), idx.private_ids(layer))


@pytest.mark.parametrize("n_layers", [6, 16])  # MiniLM (smoke, cpu); Llama-3.2-1B (gpu)
def test_subset_selection_is_a_proper_subset_in_the_configured_methods(n_layers):
    p = config.Params.model_validate(_base_params())
    for name, m in p.methods.items():
        if m.kind != "mos" or m.r is None:
            continue
        idx = mos.build_indices(n_layers, p.budget_rank, m.r, m.shards_per_vector, m.private_fraction,
                                m.subset_selection, m.pair_dissociation)  # fmt: skip
        used = [set(side[layer].ravel()) - set(idx.private_ids(layer)) for side in (idx.a, idx.b) for layer in range(n_layers)]
        assert max(len(u) for u in used) < idx.n_public, name  # every layer leaves public shards out
        if m.subset_selection:
            assert len({frozenset(u) for u in used[:n_layers]}) > 1, name  # and layers differ in which
        else:
            assert len({frozenset(u) for u in used[:n_layers]}) == 1, name


def test_bad_private_fraction_is_one_line():
    with pytest.raises(ValueError, match="private_fraction"):
        mos.build_indices(4, 2, 1, shards_per_vector=4, private_fraction=0.75)  # 6 private > 4 slots
    with pytest.raises(ValueError, match="private_fraction"):
        mos.MoSConfig(target_modules=TARGET, budget_rank=2, private_fraction=1.0)
    with pytest.raises(ValueError, match="shards_per_vector"):
        mos.inject(Toy(d=15), mos.MoSConfig(target_modules=TARGET, budget_rank=2, r=4, shards_per_vector=2))
    with pytest.raises(ValueError, match="target_modules"):
        mos.inject(Toy(), mos.MoSConfig(target_modules="nothing", budget_rank=2))
    with pytest.raises(ValueError, match="alpha"):
        mos.MoSConfig(target_modules=TARGET, budget_rank=2, alpha=0.0)


# ---------------------------------------------------------------------------- the module


def test_pure_sharing_gives_every_layer_the_same_factors():
    model = _toy(subset_selection=False, pair_dissociation=False)  # r = None: the pool's 4 x 2 vectors
    _randomize_b(model)
    layers = dict(mos.mos_layers(model))
    for kind in ("query", "value", "dense"):
        first_a, first_b = layers[f"layer.0.{kind}"].factors()
        assert first_a.shape[0] == 4 * 2
        for i in range(1, 4):
            a, b = layers[f"layer.{i}.{kind}"].factors()
            assert torch.equal(a, first_a) and torch.equal(b, first_b)
    mixed = _toy(r=8, shards_per_vector=2, private_fraction=0.5)
    _randomize_b(mixed)
    layers = dict(mos.mos_layers(mixed))
    assert not torch.equal(layers["layer.0.query"].factors()[0], layers["layer.1.query"].factors()[0])


def test_merge_equals_forward_and_unmerge_restores():
    model = _toy(r=8, shards_per_vector=2, private_fraction=0.5)
    _randomize_b(model)
    before = {n: layer.base_layer.weight.clone() for n, layer in mos.mos_layers(model)}
    x = torch.randn(5, 16)
    with torch.no_grad():
        y = model(x)
        mos.merge(model)
        assert torch.allclose(model(x), y, atol=1e-5)
        mos.unmerge(model)
        assert torch.allclose(model(x), y, atol=1e-5)
    for n, layer in mos.mos_layers(model):
        assert torch.allclose(layer.base_layer.weight, before[n], atol=1e-6)
    plain = mos.merge_and_unload(copy.deepcopy(model))
    assert not list(mos.mos_layers(plain)) and not hasattr(plain, mos.POOLS)
    assert all(type(m) is nn.Linear for n, m in plain.named_modules() if n.endswith(("query", "value", "dense")))
    with torch.no_grad():
        assert torch.allclose(plain(x), y, atol=1e-5)


def test_delta_is_scaled_b_times_a():
    model = _toy(r=8, shards_per_vector=2, alpha=4.0)
    _randomize_b(model)
    layer = dict(mos.mos_layers(model))["layer.2.dense"]
    a, b = layer.factors()
    assert a.shape == (8, 16) and b.shape == (32, 8)
    # the k-th rank vector of A is the concatenation of the shards its index row names
    assert torch.equal(a[3], torch.cat([layer.pool.a[i] for i in layer.idx_a[3]]))
    assert torch.allclose(layer.delta_weight(), (b @ a) * 4.0 / 8)


def test_starts_at_the_base_model():
    torch.manual_seed(0)
    base = Toy()
    model = mos.inject(copy.deepcopy(base), mos.MoSConfig(target_modules=TARGET, budget_rank=2, r=8, shards_per_vector=2))
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))  # B pools start at zero, as LoRA's B


def test_state_dict_round_trip_restores_indices_and_pools():
    source = _toy(r=8, shards_per_vector=2, private_fraction=0.5, seed=0)
    _randomize_b(source)
    target = _toy(r=8, shards_per_vector=2, private_fraction=0.5, seed=1)  # other index matrices and pools
    state = source.state_dict()
    assert any(k.endswith("idx_a") for k in state) and any(k.startswith("mos_pools.") for k in state)
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert not torch.allclose(target(x), source(x))
        target.load_state_dict(state)
        assert torch.equal(target(x), source(x))
    layer = dict(mos.mos_layers(target))["layer.1.query"]
    assert torch.equal(layer.idx_a, dict(mos.mos_layers(source))["layer.1.query"].idx_a)
    assert layer.pool is target.mos_pools["layer_query"]  # the reference still points at the loaded pool


def test_dropout_acts_on_the_adapter_input_in_training_only():
    model = _toy(r=8, shards_per_vector=2, dropout=0.5)
    _randomize_b(model)
    x = torch.randn(6, 16)
    with torch.no_grad():
        model.eval()
        y = model(x)
        model.train()
        torch.manual_seed(3)
        first = model(x)
        torch.manual_seed(3)
        assert torch.equal(model(x), first) and not torch.allclose(first, y)
        model.eval()
        mos.merge(model)
        assert torch.allclose(model(x), y, atol=1e-5)  # eval: no dropout, equal to the merged weights
        mos.unmerge(model)
        for pool in model.mos_pools.values():
            pool.b.zero_()
        model.train()
        base_out = model(x)
        model.eval()
        assert torch.equal(base_out, model(x))  # with the update at zero, dropout touches nothing else


def test_gradients_reach_the_shards_and_the_head_only():
    model = _toy(r=8, shards_per_vector=2, private_fraction=0.5)
    _randomize_b(model)
    model(torch.randn(4, 16)).sum().backward()
    for name, param in model.named_parameters():
        trainable = name.startswith("mos_pools.") or name.startswith("classifier.")
        assert param.requires_grad == trainable, name
        assert (param.grad is not None) == trainable, name
    for pool in model.mos_pools.values():
        assert pool.a.grad.abs().sum() > 0 and pool.b.grad.abs().sum() > 0


def test_pools_are_registered_once():
    model = _toy(r=8)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False) if "mos" in n or ".a" in n]
    assert all(n.startswith("mos_pools.") for n in names)
    assert set(model.mos_pools) == {"layer_query", "layer_value", "layer_dense"}
    assert mos.pool_param_count(model) == mos.lora_param_count(Toy(), TARGET, 2)


def test_minilm_budget_equals_peft_lora():
    import peft

    from shared import zoo

    torch.manual_seed(0)
    base, _ = zoo.minilm(kind="sequence-classification", num_labels=3)
    lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=2, target_modules=MINILM_TARGET, task_type="SEQ_CLS"))
    lora_params = sum(p.numel() for n, p in lora.named_parameters() if p.requires_grad and "lora_" in n)
    assert lora_params == mos.lora_param_count(base, MINILM_TARGET, 2) == 6 * 2 * (4 * 768 + 2 * 1920)
    p = config.Params.model_validate(_base_params())
    for name, method in p.methods.items():
        model = bench.build(method, base, p, seed=0)
        got = bench.counts(model, p.head)["adapter_params"]
        want = lora_params if method.kind == "mos" else mos.lora_param_count(base, MINILM_TARGET, method.r)
        assert got == want, name
        if method.kind == "mos" and method.r is not None:
            assert min(mos.factor_ranks(model)) == method.r == 6, name  # full effective rank, 3x LoRA-B's
            assert max(mos.public_shares(model)) < 1, name  # a proper subset of the public pool


# ----------------------------------------------------------------------- config and summary


def test_config_files_validate_and_errors_name_the_key():
    base = _base_params()
    p = config.Params.model_validate(base)
    assert set(base) == set(config.Params.model_fields)
    assert p.methods["mos"].r == 6 and p.budget_rank == 2
    for scale in ("smoke", "cpu", "gpu"):
        over = yaml.safe_load((CONF / "p30" / f"{scale}.yaml").read_text())
        over.pop("defaults", None)
        config.Params.model_validate({**base, **(over or {})})
    with pytest.raises(ValueError, match="run"):
        config.Params.model_validate({**base, "run": ["nope"]})
    with pytest.raises(ValueError, match="lora takes no MoS"):
        config.Method(kind="lora", r=2, shards_per_vector=4)


def test_low_data_is_balanced_and_seeded():
    df = pd.DataFrame({"label": [0] * 10 + [1] * 3, "summary": [f"s{i}" for i in range(13)]})
    out = bench.low_data(df, 4, seed=0)
    assert out["label"].value_counts().to_dict() == {0: 4, 1: 3}
    assert out.equals(bench.low_data(df, 4, seed=0))


def test_claim_metrics():
    summary = pd.DataFrame({
        "method": ["lora_r2", "lora_r8", "lora_r16", "pure_sharing", "mos", "mos_no_dissociation", "mos_no_privatization"],
        "kind": ["lora", "lora", "lora", "mos", "mos", "mos", "mos"],
        "adapter_params": [100, 400, 800, 100, 100, 100, 100],
        "accuracy": [50.0, 60.0, 62.0, 48.0, 60.2, 59.0, 60.0],
    })  # fmt: skip
    m = bench.claim_metrics(summary, budget_rank=2)
    assert m["mos_minus_lora_4x"] == pytest.approx(0.2) and m["mos_minus_lora_8x"] == pytest.approx(-1.8)
    assert m["mos_param_savings"] == 4.0  # r16 is 1.8 points better: only r8 is matched
    assert m["pure_param_savings"] == 0.0  # pure sharing trails even LoRA r2 by 2 points
    assert m["pure_minus_lora_1x"] == -2.0 and m["mos_params_over_lora_budget"] == 1.0
    assert m["drop_no_dissociation"] == pytest.approx(1.2) and m["drop_no_privatization"] == pytest.approx(0.2)
    assert m["drop_no_subset"] is None and set(bench.CLAIM_KEYS) <= set(m)


def test_param_savings_needs_every_smaller_rank_matched_and_4x_run():
    summary = pd.DataFrame({
        "method": ["lora_r1", "lora_r2", "lora_r4", "lora_r8", "lora_r16", "mos"],
        "kind": ["lora"] * 5 + ["mos"],
        "adapter_params": [50, 100, 200, 400, 800, 100],
        "accuracy": [40.0, 45.0, 55.0, 48.0, 49.0, 50.0],  # r4 beats MoS, r8 and r16 (saturated, noisy) do not
    })  # fmt: skip
    assert bench.param_savings(summary, "mos", budget_rank=2) == 1.0  # stops at r4, not at r16's 8x
    smoke = summary[summary["method"].isin(["lora_r2", "mos"])]
    assert bench.param_savings(smoke, "mos", budget_rank=2) is None  # LoRA at 4B did not run
    assert bench.claim_metrics(smoke, budget_rank=2)["mos_param_savings"] is None
