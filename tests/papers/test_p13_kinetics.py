"""Paper 13 (Kinetics): the eFLOPs cost model against the published tables, frontiers, block top-k decoding."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from paper13 import config, cost, decode, ours
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dense_rows_reproduce_exactly_with_integer_prompt_lengths():
    configs, rows = cost.qwen3_configs(), cost.reference_rows()
    res = cost.recompute_reference(rows, configs)
    dense = res[res["attention"] == "dense"]
    assert len(dense) == 24 and dense[["compute_rel_err", "memory_rel_err"]].max().max() < 1e-12
    for r in rows[(rows["attention"] == "dense") & (rows["trial"] == 1)].itertuples():
        c = cost.prompt_len_from_compute(configs[r.model], r.generation_length, r.compute_cost)
        assert abs(c - round(c)) < 1e-6  # a whole number of tokens: the formula and the config are right
    assert sorted(set(dense["prompt_len"])) == [140, 155, 177, 191]


def test_block_topk_rows_need_the_published_sign():
    configs, rows = cost.qwen3_configs(), cost.reference_rows()
    pub = cost.recompute_reference(rows, configs, published=True)
    utils = cost.recompute_reference(rows, configs, published=False)
    top = pub["attention"] == "block_topk"
    assert pub.loc[top, ["compute_rel_err", "memory_rel_err"]].max().max() < 1e-12
    assert utils.loc[top, "memory_rel_err"].max() > 1e-3  # the minus sign of utils.py does not give the tables
    assert (utils.loc[~top, "memory_rel_err"] < 1e-12).all()  # dense rows do not depend on it


def test_dense_cost_by_hand_and_shared_prompt():
    cfg = cost.ModelConfig("toy", params=100.0, layers=2, heads=4, kv_heads=2, head_dim=8)  # q_dim 64, kv_dim 32
    one = cost.dense_cost(cfg, prompt_len=10, gen_len=5)
    assert one.compute_flops == 2 * 100 * 5 + 2 * 64 * (20 + 5) * 5
    assert one.memory_bytes == 2 * 32 * (20 + 5) * 5
    four = cost.dense_cost(cfg, 10, 5, trials=4)
    assert four.compute_flops == 4 * one.compute_flops  # compute scales with N
    assert four.memory_bytes == 2 * 32 * (20 + 20) * 5 < 4 * one.memory_bytes  # the prompt's KV is read once
    assert one.eflops(2.0) == one.compute_flops + 2.0 * one.memory_bytes
    with pytest.raises(ValueError, match="trials >= 1"):
        cost.dense_cost(cfg, 10, 5, trials=0)


def test_block_topk_attends_the_budget_and_is_cheaper_at_long_context():
    assert cost.attended_tokens(prompt_len=1000, gen_len=50, budget=512) == 512 * 50  # context above budget
    cfg = cost.qwen3_configs()["Qwen3-8B"]
    dense = cost.dense_cost(cfg, 155, 32768).eflops()
    sparse = cost.block_topk_cost(cfg, 155, 32768, block=32, topk=16).eflops()
    assert sparse < 0.2 * dense
    with pytest.raises(ValueError, match="block >= 1"):
        cost.block_topk_cost(cfg, 155, 100, block=0, topk=4)


def test_memory_dominates_small_model():
    configs, rows = cost.qwen3_configs(), cost.reference_rows()
    r = rows.iloc[0]
    c = cost.expected_cost(cost.dense_cost, configs["Qwen3-0.6B"], 155, r.generation_length)
    comp, mem = c.tera()
    assert 150 < mem / comp < 162  # the planning notes' 156x
    b = cost.cost_breakdown(configs["Qwen3-32B"], 155, r.generation_length)
    assert math.isclose(b["param_compute"] + b["attention_compute"] + b["kv_memory"], b["total_eflops"])


def test_coverage_model():
    n = np.array([1, 2, 8, 32])
    assert np.allclose(cost.coverage(0.3, n), 1 - 0.7**n)  # kappa = inf: independent samples
    beta = cost.coverage(0.3, n, kappa=1.0)
    assert math.isclose(beta[0], 0.3, rel_tol=1e-12)  # N = 1 is pass@1
    assert np.all(np.diff(beta) > 0) and np.all(beta <= 1 - 0.7**n + 1e-12)  # heterogeneity: less gain
    assert np.allclose(cost.coverage(0.3, n, kappa=1e7), 1 - 0.7**n, atol=1e-5)
    with pytest.raises(ValueError, match="pass1"):
        cost.coverage(1.2, n)


def _table():
    return pd.DataFrame([
        {"model": "small", "params_b": 1.0, "trials": 1, "coverage": 0.4, "flops": 1.0, "eflops": 10.0},
        {"model": "small", "params_b": 1.0, "trials": 4, "coverage": 0.8, "flops": 4.0, "eflops": 40.0},
        {"model": "big", "params_b": 10.0, "trials": 1, "coverage": 0.8, "flops": 10.0, "eflops": 12.0},
    ])  # fmt: skip


def test_choices_and_pareto_on_a_hand_table():
    t = _table()
    picks = cost.choices(t, [0.3, 0.7, 0.9])  # 0.9: unreachable, dropped
    assert list(picks["flops_model"]) == ["small", "small"] and list(picks["eflops_model"]) == ["small", "big"]
    assert math.isclose(picks["excess"].iloc[1], 40 / 12)
    s = cost.summarise(picks, floor=0.5)
    assert s == {"n_targets": 2, "eflops_not_smaller_share": 1.0, "eflops_larger_count": 1, "max_excess": 40 / 12,
                 "eflops_threshold_b": 10.0, "flops_threshold_b": 1.0}  # fmt: skip
    assert list(cost.pareto(t, "eflops")["model"]) == ["small", "big"]
    assert list(cost.pareto(t, "flops")["trials"]) == [1, 4]
    picks2, s2 = ours.compare(t, 2)
    assert s2["eflops_larger_count"] == 2 and len(picks2) == 2  # targets 0.6, 0.8: small x4 vs big x1


def test_reference_accuracy():
    acc = cost.reference_accuracy("AIME24")
    assert math.isclose(acc["Qwen3-0.6B"], 0.115) and acc.is_monotonic_increasing
    with pytest.raises(ValueError, match="benchmark"):
        cost.reference_accuracy("GSM8K")


def test_block_topk_decode_equals_dense_when_it_keeps_every_block():
    model = decode.Decoder(2, 64, 4, 2, 96, seed=1)
    a, b = model.cache(300, 16), model.cache(300, 16)
    a.fill_random(70, seed=3)
    b.fill_random(70, seed=3)
    x = torch.randn(64)
    da = model.decode(x, a, 20, "dense")
    db = model.decode(x, b, 20, "topk", topk=100)
    assert torch.allclose(da, db, atol=1e-5) and a.length == b.length == 90
    full = b.length // 16  # the block means are kept up to date by append
    assert torch.allclose(b.kmean[:, :, :full], b.k[:, :, : full * 16].unflatten(2, (full, 16)).mean(3), atol=1e-6)
    assert not torch.allclose(model.decode(x, a, 1, "dense"), model.decode(x, b, 1, "topk", topk=1))


def test_select_blocks_picks_the_best_scoring_block():
    kmean = torch.zeros(1, 10, 4)
    kmean[0, 3] = torch.tensor([1.0, 0, 0, 0])
    q = torch.tensor([[[5.0, 0, 0, 0]]])  # [kv=1, g=1, dh=4]
    sel = decode.select_blocks(q, kmean, length=8 * 10 + 3, block=10, topk=1)
    assert sel.tolist() == [[3, 8]]  # the best complete block and the current partial one


def test_linear_fit():
    fit = decode.linear_fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert math.isclose(fit["slope"], 2) and math.isclose(fit["intercept"], 1) and math.isclose(fit["r2"], 1)


def test_params_match_base_yaml_and_errors_name_the_key():
    base = yaml.safe_load((CONF / "p13" / "base.yaml").read_text())
    assert set(base) == set(config.Params.model_fields)
    config.Params(**base)
    with pytest.raises(ValueError, match="target_min"):
        config.Params(**base | {"target_min": 0.9, "target_max": 0.5})
    with pytest.raises(ValueError, match="decode_contexts"):
        config.Params(**base | {"decode_contexts": [64, 128, 256]})


def test_ours_evaluate_on_untrained_policies():
    from shared import reasoning, zoo

    policies = {}
    for name, d in (("s", 32), ("m", 64)):
        spec = zoo.ModelSpec(attention="gqa", vocab_size=reasoning.VOCAB_SIZE, d_model=d, n_layers=2, n_heads=4,
                             n_kv_heads=2, d_ff=2 * d, max_seq_len=128)  # fmt: skip
        policies[name] = reasoning.as_policy(zoo.build(spec, seed=0), spec, name)
    problems = reasoning.generate(3, 2, seed=0)
    t = ours.evaluate(reasoning, policies, problems, [1, 2], method="majority_vote", max_new_tokens=16,
                      temperature=1.0, seed=0, intensity=10.0)  # fmt: skip
    assert list(t["trials"]) == [1, 2, 1, 2] and (t["kv_bytes"] > 0).all()
    assert np.allclose(t["eflops"], t["flops"] + 10.0 * t["kv_bytes"])
    for _, g in t.groupby("model"):  # N = 2 costs about twice N = 1 (the first sample is shared)
        assert g["flops"].iloc[1] > g["flops"].iloc[0]


def test_ours_compare_with_nothing_to_separate():
    t = _table().assign(coverage=0.0)
    picks, s = ours.compare(t, 4)
    assert picks.empty and s["eflops_larger_count"] is None
