"""Paper 40 (ExpertWeave): ESFT selection and training, the weaved model, virtual memory, arithmetic."""

import csv
import mmap

import numpy as np
import pytest
import torch
import yaml

from paper40 import config, esft, vmem, weave
from shared import trainer, zoo
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = zoo.ModelSpec(attention="gqa", ffn="moe", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                     d_ff=64, max_seq_len=32, n_experts=8, n_experts_per_token=2, n_shared_experts=1, d_expert=16)


@pytest.fixture(scope="module")
def base():
    return zoo.build(SPEC, seed=0)


def _adapter(base, name, selection, seed):
    g = torch.Generator().manual_seed(seed)
    ad = esft.Adapter(name, selection)
    for row, (_, block) in enumerate(esft.moe_blocks(base)):
        for j in selection[row]:
            gu, dn = block.experts.gate_up_proj.detach()[j], block.experts.down_proj.detach()[j]
            ad.experts[(row, j)] = (gu + 0.1 * torch.randn(gu.shape, generator=g), dn + 0.1 * torch.randn(dn.shape, generator=g))
    return ad


# ----------------------------------------------------------------------------- ESFT
def test_select_experts_reaches_p_with_the_fewest_experts():
    ratio = np.array([[0.05, 0.4, 0.3, 0.25], [0.25, 0.25, 0.25, 0.25]])
    assert esft.select_experts(ratio, 0.5) == [[1, 2], [0, 1]]  # ties: lower id first
    assert esft.select_experts(ratio, 0.4) == [[1], [0, 1]]  # exactly p is enough
    assert esft.select_experts(ratio, 1.0) == [[0, 1, 2, 3], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="p: the cumulative relevance threshold"):
        esft.select_experts(ratio, 0.0)


def test_routing_counts_are_token_selection_ratios(base):
    x = torch.randint(0, 64, (3, 10))
    counts = esft.routing_counts(base, [(x, x)])
    assert counts.shape == (2, 8) and (counts.sum(axis=1) == 3 * 10 * 2).all()  # T x top-k per layer
    assert np.allclose(esft.token_selection_ratio(counts).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="counts: MoE layer 1 routed no tokens"):
        esft.token_selection_ratio(np.array([[1, 2], [0, 0]]))
    block = esft.moe_blocks(base)[0][1].experts  # the formula is the real expert's bytes
    real = (block.gate_up_proj[0].numel() + block.down_proj[0].numel()) * block.gate_up_proj.element_size()
    assert esft.expert_bytes(SPEC.d_model, SPEC.d_expert) == real


def test_finetune_moves_only_the_selected_experts(base):
    selection = [[1, 5], [0]]
    x = torch.randint(0, 64, (2, 16))
    cfg = trainer.TrainConfig(steps=3, batch_size=2, seq_len=15, lr=0.01, weight_decay=0.0, log_every=1)
    batches = [(x[:, :-1], x[:, 1:])] * 3
    adapter, _, tuned = esft.finetune(base, selection, batches, cfg, name="t", progress=lambda it, **_: it)
    assert esft.frozen_unchanged(base, tuned, selection)  # router, shared expert, attention: bit for bit
    moved = tuned.model.layers[0].mlp.experts.gate_up_proj[1] - base.model.layers[0].mlp.experts.gate_up_proj[1]
    assert moved.abs().max() > 0 and sorted(adapter.experts) == [(0, 1), (0, 5), (1, 0)]
    # a merged model built from the adapter is the tuned model
    x2 = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.equal(esft.merged(base, adapter)(input_ids=x2).logits, tuned(input_ids=x2).logits)
    with pytest.raises(ValueError, match="weight_decay: must be 0"):
        esft.finetune(base, selection, batches, cfg.model_copy(update={"weight_decay": 0.1}), name="t")


def test_package_tokens_follow_file_boundaries(tmp_path):
    eot = 9
    files = [("a/x.py", "a", [1, 2]), ("b/y.py", "b", [3]), ("a/z.py", "a", [4, 5, 6])]
    stream = np.array([t for _, _, ids in files for t in ids + [eot]], dtype=np.uint16)
    np.save(tmp_path / "train.npy", stream)
    with (tmp_path / "files.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "module", "package", "split", "bytes", "tokens"])
        for path, pkg, ids in files:
            w.writerow([path, path, pkg, "train", 1, len(ids)])
    assert esft.package_tokens(tmp_path, ["a"]).tolist() == [1, 2, eot, 4, 5, 6, eot]
    with pytest.raises(ValueError, match="no train files"):
        esft.package_tokens(tmp_path, ["c"])
    tune, held = esft.package_split(tmp_path, ["a"], held_every=2)  # the second file of a is held out whole
    assert tune.tolist() == [1, 2, eot] and held.tolist() == [4, 5, 6, eot]
    with pytest.raises(ValueError, match="held_every: packages \\['b'\\] have 1 files"):
        esft.package_split(tmp_path, ["b"], held_every=2)


# ----------------------------------------------------------------------------- the weaved model
def test_rerouting_map_and_the_padded_layout(base):
    ads = [_adapter(base, "a", [[3, 6], [1]], 1), _adapter(base, "b", [[6], [0, 1, 7]], 2)]
    w = weave.WeavedModel(base, ads)
    assert w.e_max == 3
    pi = w.blocks[0].pi_flat.view(3, 8)  # rows: base, a, b; Delta_i = M + i * E_max
    assert pi[0].tolist() == list(range(8))
    assert pi[1].tolist() == [0, 1, 2, 8, 4, 5, 9, 7]
    assert pi[2].tolist() == [0, 1, 2, 3, 4, 5, 11, 7]
    top_k = torch.tensor([[3, 6], [6, 0]])
    w.set_batch(torch.tensor([0, 1]), seq_len=1)
    assert w.blocks[0].reroute(top_k).tolist() == [[8, 9], [11, 0]]
    assert torch.equal(w.blocks[0].reroute_unfused(top_k, torch.tensor([0, 1]), 1), w.blocks[0].reroute(top_k))
    mem = w.blocks[1].memory()  # layer 1: base 8 + a 1 + b 3 written of 8 + 2 x 3 slots
    per_expert = 3 * 32 * 16 * 4
    assert mem["used_bytes"] == 12 * per_expert and mem["reserved_bytes"] == 14 * per_expert
    with pytest.raises(ValueError, match="e_max: an adapter tunes 3 experts"):
        weave.WeavedModel(base, ads, e_max=2)


@pytest.mark.parametrize("storage, e_max, slots", [("virtual", None, None), ("dense", None, None), ("virtual", 6, 5),
                                                    ("dense", 6, 5)])
def test_mixed_batch_equals_each_merged_model(base, storage, e_max, slots):
    ads = [_adapter(base, "a", [[0, 3], [2, 5, 6]], 1), _adapter(base, "b", [[3], [7]], 2),
           _adapter(base, "c", [[1, 2, 4, 7], [5]], 3)]
    w = weave.WeavedModel(base, ads, e_max=e_max, n_adapter_slots=slots, storage=storage)
    ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    aid = torch.tensor([2, -1, 0, 1, 0, 2, -1, 1])
    refs = [esft.merged(base, a) for a in ads] + [base]
    assert max(weave.max_logit_diff(w, refs, ids, aid)) <= 1e-6
    assert max(weave.max_logit_diff(w, refs, ids, aid, own_rows=True)) <= 1e-4
    assert all(b.token_offsets is None for b in w.blocks)  # no stale rerouting after a forward
    mem = w.memory()  # padded slots: reserved, never written (dense: all of it allocated)
    assert mem["reserved_bytes"] == 2 * (8 + (slots or 3) * w.e_max) * 3 * 32 * 16 * 4
    assert mem["used_bytes"] == (mem["reserved_bytes"] if storage == "dense" else (2 * 8 + 12) * 3 * 32 * 16 * 4)
    with torch.no_grad():  # the adapters matter, and the router is the base model's own
        assert (w.logits(ids, aid)[aid == 0] - base(input_ids=ids).logits[aid == 0]).abs().max() > 1e-3
        assert torch.equal(w.blocks[0].gate.weight, base.model.layers[0].mlp.gate.weight)
        assert torch.equal(w.logits(ids, None), base(input_ids=ids).logits)  # no rerouting: the base model
    with pytest.raises(ValueError, match=r"adapter_ids: must be in \[-1, 3\)"):
        w.logits(ids, torch.full((8,), 3))


# ----------------------------------------------------------------------------- virtual memory
def test_virtual_tensor_backs_only_written_slots():
    slot_bytes = 1 << 20
    before = vmem.rss()["RssAnon"]
    t = vmem.VirtualTensor(64, (slot_bytes,), dtype=torch.uint8)  # 64 MiB reserved
    reserved = vmem.rss()["RssAnon"] - before
    for s in (0, 1, 40):
        t.fill(s)
    grown = vmem.rss()["RssAnon"] - before
    assert reserved < slot_bytes // 8
    assert 3 * slot_bytes <= grown <= 1.05 * 3 * slot_bytes
    assert t.used_bytes == t.page_rounded_bytes == 3 * slot_bytes and t.reserved_bytes == 64 * slot_bytes
    t.write(2, torch.full((slot_bytes,), 7, dtype=torch.uint8))
    assert int(t.tensor[2, 5]) == 7 and int(t.tensor[3, 5]) == 0
    with pytest.raises(IndexError, match="slot 64 out of range"):
        t.fill(64)


def test_pages_touched_shares_partly_filled_pages():
    page = mmap.PAGESIZE
    assert vmem.pages_touched([0], page) == 1
    assert vmem.pages_touched([0, 1], page // 2) == 1  # two half-page slots share a page
    assert vmem.pages_touched([1], page + 1) == 2  # straddles a boundary


def test_rss_growth_table_is_consistent():
    table = vmem.rss_growth([[1, 2], [2, 0]], n_base=2, e_max=2, n_adapter_slots=3, slot_bytes=1 << 18)
    assert table["adapters"].tolist() == [0, 1, 2]
    assert table["used_bytes"].tolist() == [4 << 18, 7 << 18, 9 << 18]
    assert table["padded_bytes"].tolist() == [4 << 18, 8 << 18, 12 << 18]
    assert (table["reserved_bytes"] == 2 * 8 << 18).all()
    assert (table["rss_growth_bytes"] >= table["page_rounded_bytes"] * 0.95).all()
    with pytest.raises(ValueError, match="e_max: adapter 1 tunes 3 experts"):
        vmem.rss_growth([[1, 2], [3, 0]], n_base=2, e_max=2, n_adapter_slots=3, slot_bytes=1 << 12)


# ----------------------------------------------------------------------------- the paper's numbers
def test_table1_sparsity_and_fragmentation():
    t = vmem.table1()
    assert len(t) == 10 and t["max_experts"].max() == 13
    assert (t["sparsity_recomputed"] - t["sparsity"]).abs().max() <= 0.01
    f = vmem.f_mem(64, 13, t["avg_experts"].tolist())
    assert abs(f - 194 / 129.13) < 1e-12 and 1.49 <= f <= 1.52
    assert vmem.sparsity_of([2, 2, 2]) == 0.0 and vmem.sparsity_of([4, 2]) == 0.25
    assert t["tuned_share"].min() == 3.85 / 64 and t["tuned_share"].max() == 9.50 / 64  # the paper's "5-15%"


def test_kv_capacity_model_reproduces_the_papers_merged_points():
    model = 100 * (810_000 - 6_000)  # 100 bytes of KV per token: one model's weights = 804K tokens
    budget = vmem.paper_budget(model)
    kv = vmem.kv_capacity(model, [model // 10] * 3, model // 5, 100, budget)
    at = kv.set_index(["adapters", "deployment"])
    assert abs(at.loc[(1, "merged"), "kv_tokens"] - 810_000) <= 2 and abs(at.loc[(2, "merged"), "kv_tokens"] - 6_000) <= 2
    assert at.loc[(3, "merged"), "oom"] and not at.loc[(3, "expertweave"), "oom"]
    assert at.loc[(2, "expertweave"), "kv_tokens"] > at.loc[(2, "padding"), "kv_tokens"]


# ----------------------------------------------------------------------------- config
def test_every_scale_validates_and_a_bad_value_names_its_key():
    base_cfg = yaml.safe_load((CONF / "p40" / "base.yaml").read_text())
    for scale in ("smoke", "cpu", "gpu"):
        over = yaml.safe_load((CONF / "p40" / f"{scale}.yaml").read_text())
        over.pop("defaults")
        merged = {**base_cfg, **over}
        if "finetune" in over:
            merged["finetune"] = {**base_cfg["finetune"], **over["finetune"]}
        config.Params(**merged)
    assert set(config.Params.model_fields) == set(base_cfg)
    bad = {
        "finetune": {**base_cfg["finetune"], "weight_decay": 0.1},
        "layer_tuned_experts": 65,
        "adapters": ["email", "email"],
        "relevance_p": 1.5,
        "layer_seq_len": 100,
        "eval_held_every": 1,
    }
    for key, value in bad.items():
        with pytest.raises(ValueError, match=key.split(".")[0]):
            config.Params(**{**base_cfg, key: value})
