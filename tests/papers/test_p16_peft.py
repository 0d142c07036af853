"""Paper 16: the PEFT benchmark's registry, config checks, exact parameter counts on the real
MiniLM, merging, optimizer-state accounting and the data order. Fast (no training loops)."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml

from paper16 import config, methods, peft_bench
from shared.paths import CONF

D, FF, LAYERS = 384, 1536, 6  # all-MiniLM-L6-v2
N_LABELS = 3
HEAD = D * N_LABELS + N_LABELS


def _base_params():
    base = yaml.safe_load((CONF / "p16" / "base.yaml").read_text())
    base.pop("defaults", None)
    return base


@pytest.fixture(scope="module")
def minilm():
    from shared import zoo

    torch.manual_seed(0)
    model, tokenizer = zoo.minilm(kind="sequence-classification", num_labels=N_LABELS)
    return model, tokenizer


def _options(name):
    return config.Params.model_validate(_base_params()).methods[name].options


def _build(name, base, options=None):
    torch.manual_seed(0)
    return peft_bench.build_model(name, _options(name) if options is None else options, base, total_steps=20, device="cpu")


# ------------------------------------------------------------------ registry and config


def test_registry_covers_every_family_of_the_survey():
    groups = {m.group for m in methods.REGISTRY.values()}
    assert {"additive", "selective", "reparameterized", "hybrid"} <= groups
    assert groups <= set(methods.GROUPS)
    assert methods.REGISTRY["full"].group == "full"
    assert methods.REGISTRY["lora"].mergeable and not methods.REGISTRY["prompt_tuning"].mergeable


def test_registry_names_real_peft_configs():
    import peft

    for name, method in methods.REGISTRY.items():
        if method.peft_config is not None:
            cls = getattr(peft, method.peft_config)
            fields = {f.name for f in dataclasses.fields(cls)}
            assert set(method.fixed) <= fields, name


def test_cpu_scale_runs_every_registered_method():
    params = config.Params.model_validate(_base_params())
    assert set(params.run) == set(methods.REGISTRY) == set(params.methods)
    peft_bench.check_options(params.methods)  # every option names a field of its peft config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": {"lora2": {"lr": 1e-3}}}, "methods.lora2: unknown method"),
        ({"run": ["full", "nope"]}, r"run: \['nope'\] have no entry in methods"),
        ({"run": ["full", "full"]}, "listed twice"),
        ({"methods": {"lora": {"lr": 1e-3, "options": {"total_step": 5}}}}, "set by the benchmark"),
        ({"methods": {"lora": {"lr": 1e-3, "options": {"tinit_fraction": 0.1}}}}, "are AdaLoRA options"),
        ({"methods": {"lora": {"lr": 0}}}, "greater than 0"),
    ],
)
def test_bad_config_fails_in_one_line(change, message):
    from shared.config import ParamError, validate_section

    values = {**_base_params(), **change}
    if "methods" in change and "run" not in change:
        values["run"] = list(change["methods"])
    with pytest.raises(ParamError, match=message) as info:
        validate_section(config.Params, values, "p16")
    assert "\n" not in str(info.value)


def test_unknown_peft_option_names_the_key_and_the_allowed_ones():
    bad = config.MethodParams(lr=1e-3, options={"rank": 8})
    with pytest.raises(ValueError, match=r"methods.lora.options.rank: not an option of peft.LoraConfig; allowed: .*lora_alpha"):
        peft_bench.check_options({"lora": bad})
    with pytest.raises(ValueError, match="fixed to True"):
        peft_bench.check_options({"dora": config.MethodParams(lr=1e-3, options={"use_dora": True})})
    with pytest.raises(ValueError, match="takes no options"):
        peft_bench.check_options({"bitfit": config.MethodParams(lr=1e-3, options={"r": 1})})


# ------------------------------------------------------------ exact counts on the real MiniLM


def test_lora_trainable_parameters_by_hand(minilm):
    base, _ = minilm
    model = _build("lora", base)
    r = _options("lora")["r"]
    counts = peft_bench.param_counts(model)
    assert counts["method_params"] == LAYERS * 2 * r * (D + D)  # A (r x 384) + B (384 x r) on query and value
    assert counts["head_params"] == HEAD
    assert counts["trainable_params"] == LAYERS * 2 * r * (D + D) + HEAD


def test_bitfit_trains_exactly_the_biases_and_the_head(minilm):
    base, _ = minilm
    model = _build("bitfit", base, options={})
    per_layer = 4 * D + FF + D + 2 * D  # q, k, v, attention-out biases; FFN in and out; two LayerNorm biases
    biases = LAYERS * per_layer + D + D  # + the embedding LayerNorm and the pooler
    assert peft_bench.param_counts(model) == {"trainable_params": biases + HEAD, "head_params": HEAD, "method_params": biases}
    # 26,112 biases of 22.7 M: 0.115 %, above BitFit's 0.1 % on BERT (biases grow with d, weights with d^2)
    share = 100 * biases / sum(p.numel() for p in base.parameters())
    assert 0.11 < share < 0.12


def test_other_counts_by_hand(minilm):
    base, _ = minilm
    ia3 = peft_bench.param_counts(_build("ia3", base))["method_params"]
    assert ia3 == LAYERS * (D + D + FF)  # key and value outputs, the FFN's inner activation (not attention.output)
    prompt = peft_bench.param_counts(_build("prompt_tuning", base))["method_params"]
    assert prompt == _options("prompt_tuning")["num_virtual_tokens"] * D
    head = peft_bench.param_counts(_build("head", base, options={}))
    assert head == {"trainable_params": HEAD, "head_params": HEAD, "method_params": 0}
    full = peft_bench.param_counts(_build("full", base, options={}))
    assert full["trainable_params"] == sum(p.numel() for p in base.parameters())


def test_optimizer_state_is_two_adam_moments_per_trainable_parameter(minilm):
    base, tokenizer = minilm
    model = _build("lora", base)
    optimizer = peft_bench.make_optimizer(model, 1e-3, 1e-3, 0.0, "lora")
    batch = peft_bench.collate(peft_bench.encode(tokenizer, ["Return the value.", "Parse a header line."], 16), [0, 1], tokenizer.pad_token_id)
    model(**batch.inputs, labels=batch.labels).loss.backward()
    optimizer.step()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n = sum(p.numel() for p in trainable)
    # exp_avg and exp_avg_sq in float32 for every element, plus a 4-byte step counter per tensor
    assert peft_bench.optimizer_state_bytes(optimizer) == 2 * 4 * n + 4 * len(trainable)


def test_merged_lora_gives_the_unmerged_outputs(minilm):
    base, tokenizer = minilm
    model = _build("lora", base)
    with torch.no_grad():  # a non-zero update: fresh LoRA has B = 0, and merging it proves nothing
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    batch = peft_bench.collate(peft_bench.encode(tokenizer, ["Close the socket.", "Return a list of rows."], 16), [0, 1], tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        unmerged = model(**batch.inputs).logits
        original = base.eval()(**batch.inputs).logits
        merged_model = copy.deepcopy(model).merge_and_unload()
        merged = merged_model(**batch.inputs).logits
    assert type(merged_model).__name__ == "BertForSequenceClassification"  # plain weights, no adapter left
    assert (unmerged - original).abs().max() > 1e-3  # the update changes the outputs
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_prefix_tuning_is_reported_unsupported_not_crashing(minilm):
    base, _ = minilm
    with pytest.raises(peft_bench.Unsupported, match="past key values"):
        _build("prefix_tuning", base)


# ------------------------------------------------------------------------- data and schedule


def test_training_batches_are_the_same_order_every_time_and_cover_each_row_once_per_epoch():
    ids = [[101, i, 102] for i in range(10)]
    labels = list(range(10))
    a = peft_bench.train_batches(ids, labels, 4, 2, 0, seed=3)
    b = peft_bench.train_batches(ids, labels, 4, 2, 0, seed=3)
    assert len(a) == 6  # 3 batches (4, 4, 2) per epoch
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, b))
    epoch0 = torch.cat([x.labels for x in a[:3]]).tolist()
    epoch1 = torch.cat([x.labels for x in a[3:]]).tolist()
    assert sorted(epoch0) == sorted(epoch1) == labels and epoch0 != epoch1
    c = peft_bench.train_batches(ids, labels, 4, 2, 0, seed=4)
    assert torch.cat([x.labels for x in c[:3]]).tolist() != epoch0


def test_collate_pads_right_with_a_mask():
    batch = peft_bench.collate([[1, 2, 3], [4]], [0, 1], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    fixed = peft_bench.collate([[1, 2, 3], [4]], [0, 1], pad_id=0, length=2)
    assert fixed.input_ids.tolist() == [[1, 2], [4, 0]]


def test_warmup_then_linear_decay():
    f = peft_bench.warmup_linear(total_steps=10, warmup_fraction=0.2)
    values = [f(step) for step in range(10)]
    assert values[:2] == [0.5, 1.0]  # warm-up over 2 steps
    assert np.allclose(values[2:], [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
