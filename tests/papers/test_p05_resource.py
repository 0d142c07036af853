import math

import pandas as pd
import pytest
import torch
import yaml

from paper05 import config, resource_eval
from shared import metrics
from shared.paths import CONF


pytestmark = pytest.mark.usefixtures("one_thread")  # small models: a second thread only adds contention


def tiny_bert(layers: int = 3, hidden: int = 128, vocab: int = 100, seed: int = 0):
    """A small random BERT encoder with MiniLM's layout (no pooler), built in milliseconds."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * hidden, max_position_embeddings=64,
    )  # fmt: skip
    return BertModel(cfg, add_pooling_layer=False).eval()


def batch_of(vocab: int = 100, batch: int = 2, seq: int = 16) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# -------------------------------------------------------------------------- retrieval


def test_recall_and_mrr_on_a_hand_made_similarity_matrix():
    sim = torch.tensor([
        [0.9, 0.1, 0.2],  # right answer first: rank 1
        [0.8, 0.5, 0.1],  # one candidate beats it: rank 2
        [0.3, 0.3, 0.3],  # ties count against the right answer: rank 3
    ])  # fmt: skip
    scores = resource_eval.scores_from_similarity(sim)
    assert scores["recall_at_1"] == pytest.approx(1 / 3)
    assert scores["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    with pytest.raises(ValueError, match="square"):
        resource_eval.scores_from_similarity(torch.zeros(2, 3))


def test_retrieval_scores_and_fidelity_of_identical_and_swapped_embeddings():
    q = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert resource_eval.retrieval_scores(q, q)["recall_at_1"] == 1.0
    same = resource_eval.fidelity(q, q, q, q)
    assert same["fidelity_cosine"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    # another model that retrieves every query's neighbour: agreement 0, cosine < 1
    other = resource_eval.fidelity(q, q.roll(1, 0), q, q)
    assert other["top1_agreement"] == 0.0 and other["fidelity_cosine"] < 1.0


def test_retrieval_split_keeps_modules_apart_and_drops_duplicates():
    rows = [{"module": f"m{i // 3}", "summary": f"does thing {i}", "code": f"def f{i}(): pass"} for i in range(30)]
    rows.append({"module": "m0", "summary": "does thing 0", "code": "def g(): pass"})  # duplicate summary
    df = pd.DataFrame(rows)
    pool, rest = resource_eval.retrieval_split(df, 7, seed=0)
    assert len(pool) == 7
    assert "does thing 0" not in set(pool["summary"]) | set(rest["summary"])  # both copies dropped
    assert not set(pool["module"]) & set(rest["module"])
    again, _ = resource_eval.retrieval_split(df, 7, seed=0)
    pd.testing.assert_frame_equal(pool, again)
    with pytest.raises(ValueError, match="pool_size"):
        resource_eval.retrieval_split(df, 100, seed=0)


# ------------------------------------------------------------------------- techniques


def test_magnitude_pruning_zeroes_exactly_half_and_the_smallest():
    model = tiny_bert()
    pruned = resource_eval.prune_magnitude(model, 0.5)
    assert resource_eval.zero_fraction(model) == 0.0
    assert resource_eval.zero_fraction(pruned) == 0.5
    before = torch.cat([lin.weight.flatten() for _, lin in resource_eval.encoder_linears(model)]).abs()
    after = torch.cat([lin.weight.flatten() for _, lin in resource_eval.encoder_linears(pruned)])
    assert before[after == 0].max() <= before[after != 0].min()  # global ranking by magnitude
    assert torch.equal(after[after != 0], torch.cat([lin.weight.flatten() for _, lin in resource_eval.encoder_linears(model)])[after != 0])
    # the weights stay dense tensors: not one byte saved
    assert metrics.tensor_bytes(pruned) == metrics.tensor_bytes(model)
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name, _ in pruned.named_parameters())


def test_csr_bytes_by_hand_and_the_break_even_point():
    w = torch.zeros(4, 10)
    w[0, :3] = 1.0
    w[2, 5] = 2.0  # 4 non-zeros
    assert resource_eval.csr_bytes(w, torch.int64) == 4 * 4 + 4 * 8 + 5 * 8
    assert resource_eval.csr_bytes(w, torch.int32) == 4 * 4 + 4 * 4 + 5 * 4
    assert resource_eval.break_even([0.5, 0.6, 0.7], [1.5, 1.2, 0.9]) == pytest.approx(0.6 + 0.1 * 0.2 / 0.3)
    assert math.isnan(resource_eval.break_even([0.5, 0.6], [1.5, 1.2]))


def test_csr_sweep_crosses_dense_near_two_thirds_with_int64_indices():
    sweep = resource_eval.csr_sweep(tiny_bert(hidden=64), [0.0, 0.5, 0.6, 0.7, 0.8])
    assert sweep["zero_fraction"].round(3).tolist() == [0.0, 0.5, 0.6, 0.7, 0.8]
    assert (sweep["dense_bytes"] == sweep["dense_bytes"].iloc[0]).all()
    assert sweep.loc[sweep["sparsity"] == 0.5, "csr_int64_ratio"].item() > 1.4  # 12 bytes per non-zero vs 4
    # values 4 B + index 8 B per non-zero: CSR is smaller only above 1 - 4/12 = 2/3 (plus row pointers)
    assert resource_eval.break_even(sweep["sparsity"], sweep["csr_int64_ratio"]) == pytest.approx(2 / 3, abs=0.01)
    assert resource_eval.break_even(sweep["sparsity"], sweep["csr_int32_ratio"]) == pytest.approx(1 / 2, abs=0.01)


@pytest.mark.parametrize("qscheme, overhead_per_row, overhead_per_matrix", [("per_channel", 16, 0), ("per_tensor", 0, 16)])
def test_int8_dynamic_weight_bytes(qscheme, overhead_per_row, overhead_per_matrix):
    model = tiny_bert(hidden=128)
    q = resource_eval.quantize_int8_dynamic(model, qscheme)
    shapes = resource_eval.linear_shapes(model)
    expected = sum(i * o + overhead_per_row * o + overhead_per_matrix for _, i, o in shapes)  # int8 + scales/zero points
    assert resource_eval.int8_linear_weight_bytes(q) == expected
    fp32 = resource_eval.FP32_BYTES * sum(i * o for _, i, o in shapes)
    assert 0.25 < expected / fp32 <= 0.3
    # the whole model: all but the Linear layers stays fp32; each Linear holds its int8 weight,
    # per-channel scales and fp32 bias (the same total on every call: no unpacked copy skipped)
    not_linear = 4 * (sum(p.numel() for p in model.parameters()) - sum(i * o + o for _, i, o in shapes))
    packed = sum(i * o + overhead_per_row * o + 4 * o for _, i, o in shapes)
    buffers = sum(b.numel() * b.element_size() for b in q.buffers())
    storage = [metrics.model_size_report(q)["total_bytes"] for _ in range(3)]
    assert storage == [not_linear + packed + buffers] * 3
    assert storage[0] < metrics.tensor_bytes(model)
    assert resource_eval.linear_shapes(q) == shapes  # the quantized layers keep their shapes
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(
            resource_eval.forward_embed(q, batch_of()), resource_eval.forward_embed(model, batch_of())
        )  # fmt: skip
    assert cos.min() > 0.95


def test_int8_bitsandbytes_on_cpu():
    pytest.importorskip("bitsandbytes")
    model = tiny_bert(hidden=128)
    q = resource_eval.quantize_int8_bnb(model, "cpu")
    fp32 = resource_eval.FP32_BYTES * sum(i * o for _, i, o in resource_eval.linear_shapes(model))
    assert 0.25 <= resource_eval.int8_linear_weight_bytes(q) / fp32 <= 0.3  # int8 + one fp32 scale per row
    with torch.inference_mode():
        out = resource_eval.forward_embed(q, batch_of())
    assert torch.isfinite(out).all()


def test_student_copies_the_chosen_teacher_layers():
    teacher = tiny_bert(layers=4)
    student = resource_eval.make_student(teacher, [0, 3])
    assert len(student.encoder.layer) == student.config.num_hidden_layers == 2
    assert len(teacher.encoder.layer) == teacher.config.num_hidden_layers == 4  # the teacher is untouched
    for s_layer, t_index in zip(student.encoder.layer, [0, 3]):
        for (name, a), (_, b) in zip(s_layer.state_dict().items(), teacher.encoder.layer[t_index].state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight)
    assert student.embeddings.word_embeddings.weight.data_ptr() != teacher.embeddings.word_embeddings.weight.data_ptr()
    with torch.inference_mode():
        assert resource_eval.forward_embed(student, batch_of()).shape == (2, teacher.config.hidden_size)
    with pytest.raises(ValueError, match="layers"):
        resource_eval.make_student(teacher, [4])


def test_distillation_moves_the_student_towards_the_targets_and_is_deterministic():
    import importlib

    from transformers import AutoTokenizer

    from shared import zoo

    tokenizer = AutoTokenizer.from_pretrained(str(importlib.import_module(zoo.MINILM).get_model_path()))
    teacher = tiny_bert(layers=3, vocab=tokenizer.vocab_size, hidden=32, seed=0)
    texts = [f"return the {w} of a list" for w in ("sum", "max", "min", "mean", "length", "sorted copy", "first", "last")]
    targets = resource_eval.embed(teacher, tokenizer, texts, batch_size=4, max_len=16, normalize=False)
    cfg = resource_eval.DistillConfig(steps=30, batch_size=4, max_len=16, lr=3e-3, warmup_fraction=0.1,
                                      cosine_weight=1.0, freeze_embeddings=True)  # fmt: skip
    histories = []
    for _ in range(2):
        student = resource_eval.make_student(teacher, [2])
        histories.append(resource_eval.distill(student, targets, texts, tokenizer, cfg, seed=3))
    pd.testing.assert_frame_equal(histories[0], histories[1])
    history = histories[0]
    assert len(history) == 30 and history["lr"].max() == pytest.approx(3e-3)
    assert history["loss"].tail(5).mean() < history["loss"].head(5).mean()
    assert torch.equal(student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight)  # frozen


# ------------------------------------------------------------------------------ FLOPs


def test_flop_counter_matches_the_analytic_count():
    model = tiny_bert(layers=2, hidden=64)
    batch = batch_of(batch=3, seq=16)
    counted = resource_eval.counted_flops(model, batch)
    analytic = resource_eval.analytic_flops(model, 3, 16)
    assert counted["linear"] == analytic["linear"] == 2 * 3 * 16 * 2 * (4 * 64 * 64 + 2 * 64 * 256)
    assert counted["attention"] == analytic["attention"] == 2 * 2 * 2 * 3 * 16 * 16 * 64
    assert counted["total"] == analytic["total"]
    assert model.config._attn_implementation == "sdpa"  # the count switched to eager and back


# --------------------------------------------------------------------- Pareto, tables


def test_pareto_flags_on_a_hand_made_table():
    table = pd.DataFrame({
        "technique": ["baseline", "small", "fast", "dominated", "tie-small"],
        "model_bytes": [100, 40, 100, 100, 40],
        "latency_median_s": [1.0, 1.0, 0.3, 1.0, 1.0],
        "recall_at_1": [0.70, 0.68, 0.60, 0.65, 0.68],
        "mrr": [0.8, 0.78, 0.7, 0.75, 0.78],
    })  # fmt: skip
    out = resource_eval.add_relative_columns(table)
    assert out["pareto"].tolist() == [True, True, True, False, True]  # equal rows do not dominate each other
    assert out["compression_ratio"].tolist() == [1.0, 2.5, 1.0, 1.0, 2.5]
    assert out["speedup"].round(4).tolist() == [1.0, 1.0, round(1 / 0.3, 4), 1.0, 1.0]
    assert out["recall_drop_points"].round(6).tolist() == [0.0, 2.0, 10.0, 5.0, 2.0]


def test_taxonomy_covers_the_five_resources_and_labels_energy_by_its_source():
    estimated = resource_eval.taxonomy_table("estimate (no power counter readable): ...")
    assert {"computation", "memory", "energy", "money", "network communication"} <= set(estimated["resource"])
    assert set(estimated["status"]) <= {"measured", "estimate", "not-applicable-here"}
    energy = estimated.set_index("metric").loc["energy consumption"]
    assert energy["status"] == "estimate"
    measured = resource_eval.taxonomy_table("NVML total energy counter (GPU board)").set_index("metric")
    assert measured.loc["energy consumption", "status"] == "measured"
    for row in estimated.itertuples():  # every metric not measured here says why
        assert row.status == "measured" or row.reason
        assert row.survey_section.startswith("§")


def test_allreduce_volume_follows_the_ring_formula():
    assert resource_eval.ring_allreduce_bytes(1000, 4) == 2 * 1000 * 3 / 4 * 4
    for world_size in (2, 3):  # 3 tells the ring (4n/3 per rank) from sending everything (2n)
        comm = resource_eval.allreduce_volume(world_size=world_size, numel=60000, timeout_s=30)
        assert comm["correct"]
        assert 0.95 <= comm["ratio"] <= 1.05, comm


# ------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_every_scale_gives_valid_params(scale):
    base = yaml.safe_load((CONF / "p05" / "base.yaml").read_text())
    changes = yaml.safe_load((CONF / "p05" / f"{scale}.yaml").read_text())
    changes.pop("defaults")
    params = config.Params(**{**base, **changes})
    assert set(base) == set(config.Params.model_fields)
    assert params.pool_size >= 8


@pytest.mark.parametrize(
    "change, message",
    [({"student_layers": [0, 6]}, "student_layers"), ({"student_layers": [0, 1, 2, 3, 4, 5]}, "fewer than 6"),
     ({"csr_sparsities": [0.5, 1.0]}, "csr_sparsities"), ({"distill_texts": 4}, "distill_texts")],
)  # fmt: skip
def test_params_reject_bad_values(change, message):
    base = yaml.safe_load((CONF / "p05" / "base.yaml").read_text())
    with pytest.raises(ValueError, match=message):
        config.Params(**{**base, **change})



def test_language_model_techniques_touch_the_blocks_not_the_tied_head():
    from shared import zoo

    spec = zoo.ModelSpec(attention="gqa", vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=128, max_seq_len=32)  # fmt: skip
    model = zoo.build(spec, seed=0)
    names = [name for name, _ in resource_eval.encoder_linears(model)]
    assert len(names) == 2 * 7 and all(".layers." in f".{n}" for n in names)  # q k v o gate up down per layer
    q = resource_eval.quantize_int8_dynamic(model, "per_channel")
    assert isinstance(q.lm_head, torch.nn.Linear), "the head is tied to the embedding: left in fp32"
    assert resource_eval.encoder_linears(q) == [], "every block Linear became a quantized one"
    x = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    batches = [(x[:, :-1], x[:, 1:])]
    table = resource_eval.lm_techniques(model, batches, qscheme="per_channel", prune_amount=0.5,
                                        repeats=1, warmup=0, num_threads=1)  # fmt: skip
    by = table.set_index("technique")
    assert by.loc["baseline", "mcr"] == 1.0 and by.loc["pruned", "block_linear_zero_fraction"] == 0.5
    assert by.loc["int8-dynamic", "storage_bytes"] < by.loc["baseline", "storage_bytes"]
    assert by.loc["pruned", "storage_bytes"] == by.loc["baseline", "storage_bytes"]  # dense zeros cost the same
    expected = by.loc["int8-dynamic", "compression"] / by.loc["int8-dynamic", "perplexity_ratio"]
    assert by.loc["int8-dynamic", "mcr"] == pytest.approx(expected)
