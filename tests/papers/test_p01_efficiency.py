"""Paper 01 (EfficientLLM): the logic of the three axes on tiny models (fast, CPU)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from paper01 import architectures, config, finetune, quantize
from shared import zoo
from shared.paths import CONF

TINY = dict(vocab_size=64, d_model=64, n_layers=2, n_heads=4, d_ff=96, max_seq_len=64)
SPECS = {
    "mha": zoo.ModelSpec(attention="mha", **TINY),
    "gqa": zoo.ModelSpec(attention="gqa", n_kv_heads=2, **TINY),
    "mqa": zoo.ModelSpec(attention="mqa", **TINY),
    "mla": zoo.ModelSpec(attention="mla", kv_lora_rank=8, **TINY),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The four attention variants plus an MoE, saved as tinylm would (zoo.save)."""
    root = tmp_path_factory.mktemp("tinylm")
    specs = dict(SPECS)
    specs["moe"] = zoo.ModelSpec(attention="gqa", ffn="moe", n_kv_heads=2, n_experts=4, n_experts_per_token=1,
                                 n_shared_experts=1, d_expert=48, **TINY)  # fmt: skip
    for i, (name, spec) in enumerate(specs.items()):
        zoo.save(zoo.build(spec, seed=i), spec, root / name)
    return root


# ------------------------------------------------------------------- architectures
def test_measured_kv_cache_matches_the_definitions():
    values = {name: architectures.measured_kv_values_per_token(zoo.build(spec)) for name, spec in SPECS.items()}
    L, dh = TINY["n_layers"], TINY["d_model"] // TINY["n_heads"]
    assert values["mha"] == 2 * L * 4 * dh
    assert values["gqa"] / values["mha"] == 2 / 4
    assert values["mqa"] / values["mha"] == 1 / 4
    mla = SPECS["mla"]
    assert values["mla"] == L * (mla.kv_lora_rank + mla.qk_rope_dim)  # the latent + RoPE key, not per-head K/V
    for name, spec in SPECS.items():  # the analytic paper layout, in values
        assert values[name] == zoo.kv_cache_bytes_per_token(spec, 1, "paper")


def test_model_dirs_names_the_missing_model(saved):
    assert set(architectures.model_dirs(saved, ["mha", "moe"])) == {"mha", "moe"}
    with pytest.raises(ValueError, match=r"'nope' is not in the tinylm artifact.*mha"):
        architectures.model_dirs(saved, ["mha", "nope"])


def test_dense_equal_total_runs_every_expert():
    moe = zoo.ModelSpec(attention="gqa", ffn="moe", n_kv_heads=2, n_experts=8, n_experts_per_token=2, d_expert=16, **TINY)
    full = architectures.dense_equal_total(moe)
    assert full.n_experts_per_token == 8 and zoo.param_counts(full)["total"] == zoo.param_counts(moe)["total"]
    assert zoo.forward_flops_per_token(moe, 64) < zoo.forward_flops_per_token(full, 64)
    with pytest.raises(ValueError, match="MoE"):
        architectures.dense_equal_total(SPECS["mha"])


def test_latency_table_reuses_one_prefill_per_context(saved):
    models = architectures.load_models(architectures.model_dirs(saved, ["mha", "mqa"]), "cpu", "float32")
    table = architectures.latency_table(models, [16, 32], decode_tokens=3, repeats=2, warmup=1, device="cpu", dtype="float32",
                                        num_threads=1, interval_s=0.01, seed=0)  # fmt: skip
    assert list(table[["variant", "context"]].itertuples(index=False, name=None)) == [("mha", 16), ("mqa", 16), ("mha", 32), ("mqa", 32)]
    assert (table["decode_s_per_token"] > 0).all() and (table["prefill_s"] > 0).all()
    assert table["energy_source"].str.len().gt(0).all() and (table["pcu_prefill"] > 0).all()


def test_claims_from_the_tables(saved):
    folders = architectures.model_dirs(saved, ["mha", "gqa", "mqa", "mla", "moe"])
    x = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(0))
    val = [(x[:, :-1], x[:, 1:])]
    static = architectures.static_table(folders, val, device="cpu", dtype="float32", kv_bytes_per_value=2, context_len=16)
    latency = pd.DataFrame({"variant": ["mha", "gqa", "mqa", "mla", "moe"], "context": 64, "prefill_s": 1.0,
                            "decode_s_per_token": [4.0, 3.0, 2.0, 5.0, 3.5]})  # fmt: skip
    specs = {name: architectures.load_spec(folder) for name, folder in folders.items()}
    m, t, summary = architectures.claim_metrics(static, latency, attention_variants=["mha", "gqa", "mqa", "mla"], baseline="mha",
                                                moe_model="moe", moe_dense_equal_active="gqa", moe_spec=specs["moe"], context_len=16)  # fmt: skip
    assert m["kv_ratio_mqa_over_expected"] == m["kv_ratio_gqa_over_expected"] == m["kv_ratio_mla_cache_over_latent_layout"] == 1.0
    assert m["kv_ratio_mqa_vs_mha"] == 0.25 and m["kv_ratio_gqa_vs_mha"] == 0.5
    assert t["mqa_decode_ratio_vs_mha"] == 0.5 and t["mqa_memory_latency_rank"] == 1
    assert m["moe_flops_ratio_vs_dense_equal_total"] < 1 < m["moe_weight_bytes_ratio_vs_dense_active"]
    assert 1 <= m["mla_ppl_rank"] <= 4 and t["n_variants_best_on_all"] in (0, 1)
    assert bool(summary.set_index("variant").loc["mqa", "pareto_kv_latency"])


def test_rank_and_best_on_all():
    values = pd.Series({"a": 2.0, "b": 1.0, "c": 1.0})
    assert architectures.rank_of(values, "a") == 3 and architectures.rank_of(values, "b") == 1
    table = pd.DataFrame({"variant": ["a", "b"], "x": [1, 2], "y": [1, 2]})
    assert architectures.best_on_all(table, ["x", "y"]) == ["a"]
    assert architectures.best_on_all(table.assign(y=[2, 1]), ["x", "y"]) == []


# ----------------------------------------------------------------------------- PEFT
@pytest.mark.parametrize("rank", [8, 64])
def test_lora_and_rslora_scale_by_alpha_over_r_and_sqrt_r(rank):
    alpha = 2.0 * rank
    lora = finetune.with_adapters(zoo.build(SPECS["gqa"]), "lora", rank, 2.0, TARGETS)
    rslora = finetune.with_adapters(zoo.build(SPECS["gqa"]), "rslora", rank, 2.0, TARGETS)
    assert finetune.adapter_scalings(lora) == {alpha / rank}
    (scaling,) = finetune.adapter_scalings(rslora)
    assert scaling == pytest.approx(alpha / math.sqrt(rank))
    # the same adapters, so the same trainable parameters: r x (in + out) per adapted layer
    per_layer = {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64),
                 "gate_proj": (64, 96), "up_proj": (64, 96), "down_proj": (96, 64)}  # fmt: skip
    expected = TINY["n_layers"] * sum(rank * (i + o) for i, o in per_layer.values())
    assert finetune.trainable_parameters(lora) == finetune.trainable_parameters(rslora) == expected


def test_dora_adds_a_magnitude_per_output_feature():
    lora = finetune.with_adapters(zoo.build(SPECS["gqa"]), "lora", 8, 2.0, TARGETS)
    dora = finetune.with_adapters(zoo.build(SPECS["gqa"]), "dora", 8, 2.0, TARGETS)
    outputs = TINY["n_layers"] * (64 + 32 + 32 + 64 + 96 + 96 + 64)
    assert finetune.trainable_parameters(dora) - finetune.trainable_parameters(lora) == outputs
    x = torch.randint(0, 64, (1, 8))
    with torch.no_grad():  # B = 0 at the start: every method is the base model
        assert torch.allclose(dora(input_ids=x).logits, zoo.build(SPECS["gqa"])(input_ids=x).logits, atol=1e-5)
    with pytest.raises(ValueError, match="method"):
        finetune.lora_config("loha", 8, 2.0, TARGETS)


def test_finetune_split_is_by_module_and_encodes_with_eot():
    df = pd.DataFrame({"module": [f"m{i % 5}" for i in range(20)], "summary": [f"Do thing {i}." for i in range(20)],
                       "code": [f"def f{i}():\n    return {i}\n" for i in range(20)]})  # fmt: skip
    train, held = finetune.split_by_module(df, 0.25)
    assert set(train["module"]).isdisjoint(held["module"]) and len(train) + len(held) == 20
    assert 1 <= held["module"].nunique() <= 4 and len(held) <= 0.25 * 20 + 4  # whole modules, about a quarter of the rows
    assert finetune.split_by_module(df, 0.25)[1].equals(held)  # deterministic

    class Enc:
        def __init__(self, ids):
            self.ids = ids

    class Tok:
        def token_to_id(self, token):
            return 0 if token == finetune.EOT else None

        def encode_batch(self, texts):
            return [Enc([1 + len(t) % 7] * 3) for t in texts]

    stream = finetune.encode_functions(train, Tok())
    assert stream.dtype == np.uint16 and (stream == 0).sum() == len(train) and stream[-1] == 0
    with pytest.raises(ValueError, match=">= 2 modules"):
        finetune.split_by_module(df[df["module"] == "m0"], 0.25)


def test_peft_claims():
    rows = []
    for model, size in (("s", 10), ("l", 20)):
        for rank in (8, 64):
            for method, loss, step in (("lora", 1.0, 1.0), ("rslora", 0.9 if model == "l" else 1.1, 1.1), ("dora", 1.0, 2.0)):
                rows.append({"model": model, "params_total": size, "method": method, "rank": rank, "eval_loss": loss, "step_s": step})
    m, t = finetune.claim_metrics(pd.DataFrame(rows))
    assert m["rslora_wins_fraction"] == 0.5
    assert t["dora_step_time_over_slowest_other"] == pytest.approx(2.0 / 1.1)


# ---------------------------------------------------------------------- quantization
def test_quantized_layers_keep_outputs_close_and_shrink(tmp_path):
    # d_model 192 with 2 KV heads of 24 (tinylm's cpu gqa): k/v projections of 48 features,
    # which bitsandbytes' packed CPU kernel cannot take (they must fall back, not crash)
    spec = zoo.ModelSpec(attention="gqa", n_kv_heads=2, vocab_size=64, d_model=192, n_layers=1, n_heads=8, d_ff=128, max_seq_len=64)
    torch.manual_seed(0)
    zoo.save(zoo.build(spec, seed=0), spec, tmp_path / "m")
    x = torch.randint(0, 64, (2, 16))
    ref, _ = quantize.load_causal_lm(tmp_path / "m", "bfloat16")
    with torch.inference_mode():
        want = ref(input_ids=x).logits.float()
    sizes = {"bfloat16": quantize.linear_bytes(ref)}
    for fmt, tol in (("int8", 0.05), ("nf4", 0.3), ("fp4", 0.35)):
        model, _ = quantize.load_causal_lm(tmp_path / "m", fmt)
        assert quantize.is_quantized(model)
        sizes[fmt] = quantize.linear_bytes(model)
        with torch.inference_mode():
            got = model(input_ids=x).logits.float()
        assert ((got - want).norm() / want.norm()).item() < tol, fmt
    assert getattr(model, "cpu_fallback_layers") == 2  # k_proj and v_proj
    assert sizes["nf4"] / sizes["bfloat16"] <= 0.30  # 4 bits + one fp32 absmax per 64 weights
    assert 0.45 <= sizes["int8"] / sizes["bfloat16"] <= 0.55  # 8 bits + a scale per row
    with pytest.raises(ValueError, match="format"):
        quantize.bnb_config("int3")


def test_mcr_against_bf16():
    table = pd.DataFrame({"model": "a", "format": ["bfloat16", "nf4"], "model_bytes": [400, 100], "linear_bytes": [300, 80],
                          "val_ppl": [10.0, 12.5]})  # fmt: skip
    out = quantize.with_ratios(table, "model", "val_ppl", higher_is_better=False).set_index("format")
    assert out.loc["nf4", "model_bytes_ratio_vs_bf16"] == 0.25
    assert out.loc["nf4", "mcr_vs_bf16"] == pytest.approx(4 * 10.0 / 12.5)  # Eq. 9, perplexity inverted
    assert out.loc["bfloat16", "mcr_vs_bf16"] == 1.0
    acc = quantize.with_ratios(table.rename(columns={"val_ppl": "acc"}), "model", "acc", higher_is_better=True)
    assert acc.set_index("format").loc["nf4", "mcr_vs_bf16"] == pytest.approx(4 * 12.5 / 10.0)
    with pytest.raises(ValueError, match="bfloat16 row"):
        quantize.with_ratios(table[table["format"] == "nf4"], "model", "val_ppl", higher_is_better=False)


def test_code_search_recall_and_pairs():
    emb = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert quantize.recall_at_1(emb, emb) == 1.0
    assert quantize.recall_at_1(emb, emb.roll(1, dims=0)) < 0.2
    df = pd.DataFrame({"summary": ["a", "a", "b", "c", "d"], "code": ["1", "2", "3", "3", "4"]})
    pairs = quantize.code_search_pairs(df, 3, seed=0)
    assert len(pairs) == 3 and pairs["summary"].is_unique and pairs["code"].is_unique
    with pytest.raises(ValueError, match="minilm_pairs"):
        quantize.code_search_pairs(df, 4, seed=0)


# --------------------------------------------------------------------------- config
def _base():
    base = yaml.safe_load((CONF / "p01" / "base.yaml").read_text())
    base.pop("defaults", None)
    return base


def test_params_need_what_the_claims_compare():
    config.Params.model_validate(_base())
    with pytest.raises(ValueError, match="quant_formats: must include"):
        config.Params.model_validate(_base() | {"quant_formats": ["bfloat16", "int8"]})
    with pytest.raises(ValueError, match="peft_methods"):
        config.Params.model_validate(_base() | {"peft_methods": ["lora", "dora"]})
    with pytest.raises(ValueError, match="baseline"):
        config.Params.model_validate(_base() | {"attention_variants": ["gqa", "mha"]})
