"""Many adapters in one batch (shared/multilora.py): equal to peft's mixed batch, plan reuse, errors."""

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from transformers import DynamicCache

from shared import multilora, zoo

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = zoo.ModelSpec(attention="mha", vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=64)
# mixed ranks, alphas, rsLoRA, and one adapter that also adapts o_proj
CONFIGS = {
    "ad_a": LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    "ad_b": LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, use_rslora=True),
    "ad_c": LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False),
}
UNGROUPED = ["ad_b", None, "ad_a", "ad_b", "ad_c", None]
GROUPED = ["ad_a", "ad_a", None, "ad_c", "ad_b", "ad_b"]
TOL = 1e-5


@pytest.fixture(scope="module")
def peft_model():
    torch.manual_seed(0)
    model = None
    for name, config in CONFIGS.items():
        if model is None:
            model = get_peft_model(zoo.build(SPEC, seed=0), config, adapter_name=name)
        else:
            model.add_adapter(name, config)
    return model.eval()


@pytest.fixture(scope="module")
def served(peft_model):
    return multilora.attach(zoo.build(SPEC, seed=0), multilora.AdapterStore.from_peft(peft_model))


def peft_names(ids):
    return [a or "__base__" for a in ids]


def tokens(batch, length, seed):
    return torch.randint(0, SPEC.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def test_adapters_change_the_output(peft_model, served):
    """Otherwise the equality tests below could not fail."""
    ids = tokens(3, 8, 0)
    base = served.model(ids).logits
    lora = peft_model(ids, adapter_names=["ad_a", "ad_b", "ad_c"]).logits
    assert (lora - base).abs().amax(dim=(1, 2)).min() > 1e-2


@pytest.mark.parametrize("path", multilora.PATHS)
@pytest.mark.parametrize("adapter_ids", [UNGROUPED, GROUPED], ids=["ungrouped", "grouped"])
@torch.inference_mode()
def test_prefill_equals_peft_mixed_batch(peft_model, served, path, adapter_ids):
    ids = tokens(len(adapter_ids), 10, 1)
    want = peft_model(ids, adapter_names=peft_names(adapter_ids)).logits
    with served.batch(adapter_ids, path=path) as plan:
        got = served.model(ids).logits
    assert plan.grouped == (adapter_ids is GROUPED)
    assert (got - want).abs().max() <= TOL


@pytest.mark.parametrize("path", multilora.PATHS)
@torch.inference_mode()
def test_decode_with_kv_cache_equals_peft(peft_model, served, path):
    ids, steps = tokens(len(UNGROUPED), 7, 2), tokens(len(UNGROUPED), 3, 3)
    cache_peft, cache_ours = DynamicCache(), DynamicCache()
    want = [peft_model(ids, cache=cache_peft, use_cache=True, adapter_names=peft_names(UNGROUPED)).logits]
    want += [
        peft_model(steps[:, t : t + 1], cache=cache_peft, use_cache=True, adapter_names=peft_names(UNGROUPED)).logits
        for t in range(steps.shape[1])
    ]
    with served.batch(UNGROUPED, path=path):  # one plan for the prefill and every decode step
        got = [served.model(ids, cache=cache_ours, use_cache=True).logits]
        got += [served.model(steps[:, t : t + 1], cache=cache_ours, use_cache=True).logits for t in range(steps.shape[1])]
    assert cache_ours.get_seq_length() == 10
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= TOL


@torch.inference_mode()
def test_one_plan_per_batch_shared_by_every_layer(served):
    before, ids = served.plans_built, tokens(len(UNGROUPED), 5, 4)
    with served.batch(UNGROUPED, path="segment") as plan:
        first = served.model(ids).logits
        # sorted once: ad_b's two requests form one segment, base-only requests none
        assert [(e - s) for s, e, _ in plan.segments] == [2, 1, 1]
    assert served.plans_built == before + 1
    assert plan.applied == len(served.layers) == 2 * 3  # q, v, o of both layers used the one plan
    assert served.plan is None  # outside the context: the base model
    with served.batch(plan):  # a held plan is reused, not rebuilt
        assert torch.equal(served.model(ids).logits, first)
    assert served.plans_built == before + 1 and plan.applied == 2 * 2 * 3


@torch.inference_mode()
def test_outside_a_batch_and_all_base_requests_give_the_base_model(served):
    ids = tokens(2, 6, 5)
    plain = zoo.build(SPEC, seed=0)(ids).logits
    assert torch.equal(served.model(ids).logits, plain)
    assert torch.equal(served(ids, adapter_ids=[None, None]).logits, plain)


def test_store_from_peft_state_dict_matches_the_layers(peft_model):
    from_layers = multilora.AdapterStore.from_peft(peft_model)
    store = multilora.AdapterStore()
    for name, config in CONFIGS.items():
        store.add_peft_state_dict(name, get_peft_model_state_dict(peft_model, adapter_name=name), config)
    assert store.names == from_layers.names
    for name in CONFIGS:
        assert store[name].keys() == from_layers[name].keys()
        for module, w in store[name].items():
            ref = from_layers[name][module]
            assert torch.equal(w.A, ref.A) and torch.equal(w.B, ref.B) and w.scale == pytest.approx(ref.scale)
    assert {w.rank for w in store["ad_b"].values()} == {8}
    assert store["ad_b"]["model.layers.0.self_attn.q_proj"].scale == pytest.approx(8 / 8**0.5)


def test_errors_name_the_key(peft_model, served):
    with pytest.raises(KeyError, match=r"adapter_ids\[1\]: unknown adapter 'nope'"):
        with served.batch(["ad_a", "nope"]):
            pass
    with pytest.raises(ValueError, match=r"adapter_ids: 2 ids for a batch of 3"):
        with served.batch(["ad_a", "ad_b"]):
            served.model(tokens(3, 4, 6))
    with pytest.raises(ValueError, match="path: must be one of"):
        served.batch(["ad_a"], path="loop").__enter__()
    with pytest.raises(KeyError, match="adapter: unknown adapter 'x'"):
        served.store["x"]
    store = multilora.AdapterStore()
    with pytest.raises(ValueError, match="'bad' module 'q': rank mismatch"):
        store.add("bad", {"q": (torch.zeros(4, 64), torch.zeros(64, 2), 1.0)})
    state = get_peft_model_state_dict(peft_model, adapter_name="ad_a")
    with pytest.raises(ValueError, match="rank mismatch, weights have r=2, config says r=8"):
        store.add_peft_state_dict("ad_a", state, CONFIGS["ad_b"])
    store.add("wide", {"model.layers.0.self_attn.q_proj": (torch.zeros(2, 32), torch.zeros(64, 2), 1.0)})
    with pytest.raises(ValueError, match=r"adapter 'wide' module 'model.layers.0.self_attn.q_proj': .* do not fit Linear\(64, 64\)"):
        multilora.attach(zoo.build(SPEC, seed=0), store)
    store = multilora.AdapterStore()
    store.add("emb", {"model.embed_tokens": (torch.zeros(2, 64), torch.zeros(64, 2), 1.0)})
    with pytest.raises(ValueError, match="store: adapters target 'model.embed_tokens', which is not an nn.Linear"):
        multilora.attach(zoo.build(SPEC, seed=0), store)
