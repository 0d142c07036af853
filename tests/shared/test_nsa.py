"""Native Sparse Attention (shared/nsa.py): equivalences, causality, decode = full forward."""

import pytest
import torch

from shared import nsa, zoo

# tiny models on one thread, restored after each test (not set for the whole session)
pytestmark = pytest.mark.usefixtures("one_thread")

# Small blocks so a 40-token sequence has many blocks and the selection is really sparse:
# 10 selection blocks of 4, of which 3 are read; window 6; compression blocks of 4, stride 2.
NSA = dict(nsa_block=4, nsa_stride=2, nsa_select_block=4, nsa_selected=3, nsa_window=6)
SPEC = zoo.ModelSpec(
    attention="nsa", n_kv_heads=2, vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=128, **NSA
)
T = 40


@pytest.fixture(scope="module")
def model():
    return zoo.build(SPEC, seed=0)


def _layer_inputs(model, t, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, t, SPEC.d_model, generator=g)
    pos = torch.arange(t)[None]
    return x, model.model.rotary_emb(x, pos)


def _llama_attention_from(layer, branch):
    """A LlamaAttention with the NSA layer's q/o projections and one branch's K/V projections."""
    from transformers.models.llama.modeling_llama import LlamaAttention

    cfg = zoo.hf_config(SPEC, attn_implementation="eager")
    ref = LlamaAttention(cfg, layer_idx=0)
    rows = slice(branch * SPEC.kv_heads * SPEC.head_dim, (branch + 1) * SPEC.kv_heads * SPEC.head_dim)
    with torch.no_grad():
        ref.q_proj.weight.copy_(layer.q_proj.weight)
        ref.o_proj.weight.copy_(layer.o_proj.weight)
        ref.k_proj.weight.copy_(layer.k_proj.weight[rows])
        ref.v_proj.weight.copy_(layer.v_proj.weight[rows])
    return ref


def _causal_mask(t):
    return torch.full((t, t), float("-inf")).triu(1)[None, None]


def test_window_branch_alone_is_full_causal_attention_when_window_covers_the_sequence():
    spec = SPEC.model_copy(update={"nsa_window": 64})  # w >= T
    layer = nsa.NativeSparseAttention(zoo.hf_config(spec), layer_idx=0)
    model = zoo.build(SPEC, seed=0)
    x, pe = _layer_inputs(model, T)
    layer.force_gates = (0.0, 0.0, 1.0)
    with torch.no_grad():
        ours = layer(x, position_embeddings=pe)[0]
        ref = _llama_attention_from(layer, branch=2)(x, position_embeddings=pe, attention_mask=_causal_mask(T))[0]
    assert torch.allclose(ours, ref, atol=1e-5)
    # with w = 6 < T, exactly the last 6 keys (t - 6 < s <= t): sliding-window attention
    short = nsa.NativeSparseAttention(zoo.hf_config(SPEC), layer_idx=0)
    short.load_state_dict(layer.state_dict())
    short.force_gates = (0.0, 0.0, 1.0)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    window = torch.zeros(T, T).masked_fill((s > t) | (s <= t - 6), float("-inf"))[None, None]
    with torch.no_grad():
        windowed = short(x, position_embeddings=pe)[0]
        ref_w = _llama_attention_from(layer, branch=2)(x, position_embeddings=pe, attention_mask=window)[0]
    assert torch.allclose(windowed, ref_w, atol=1e-5)
    assert not torch.allclose(windowed[:, 6:], ref[:, 6:], atol=1e-3)


def test_selection_branch_is_full_causal_attention_when_n_blocks_cover_the_sequence():
    spec = SPEC.model_copy(update={"nsa_selected": 16})  # 16 blocks of 4 >= T: everything selected
    layer = nsa.NativeSparseAttention(zoo.hf_config(spec), layer_idx=0)
    x, pe = _layer_inputs(zoo.build(SPEC, seed=0), T)
    layer.force_gates = (0.0, 1.0, 0.0)
    with torch.no_grad():
        ours = layer(x, position_embeddings=pe)[0]
        ref = _llama_attention_from(layer, branch=1)(x, position_embeddings=pe, attention_mask=_causal_mask(T))[0]
    assert torch.allclose(ours, ref, atol=1e-5)


def test_importance_map_follows_eq9():
    # same blocking for compression and selection: p_slc = p_cmp
    assert torch.equal(nsa.importance_map(5, 5, block=4, stride=4, select_block=4), torch.eye(5))
    # paper sizes l=32, d=16, l'=64: compressed block i = tokens [16i, 16i+32)
    m = nsa.importance_map(7, 2, block=32, stride=16, select_block=64)
    assert m[0].tolist() == [2.0, 0.0]  # [0, 32): both units in selection block 0
    assert m[3].tolist() == [1.0, 1.0]  # [48, 80): straddles blocks 0 and 1
    assert m[4].tolist() == [0.0, 2.0]  # [64, 96)
    assert m.sum(1).tolist() == [2.0] * 7  # every compressed block spreads l/d units


def test_select_blocks_keeps_initial_and_local_blocks_and_the_top_rest():
    q_pos = torch.tensor([1, 9, 23])  # own blocks 0, 2, 5 (blocks of 4)
    importance = torch.tensor([[0.0, 0.5, 0.2, 0.9, 0.05, 0.8]]).expand(3, 6)
    chosen = nsa.select_blocks(importance, q_pos, select_block=4, n=4)
    assert chosen[0].nonzero().flatten().tolist() == [0]  # only its own (= initial) block exists
    assert chosen[1].nonzero().flatten().tolist() == [0, 1, 2]  # fewer valid blocks than n: all of them
    # block 0 (initial), 4 and 5 (local: own and previous) forced although 4 scores lowest,
    # then the best remaining past block: 3 (0.9), not 1 (0.5), never the future
    assert chosen[2].nonzero().flatten().tolist() == [0, 3, 4, 5]


def test_block_importance_sums_the_heads_of_a_gqa_group():
    # 4 query heads, 2 KV heads; identity map (l = l' = d); one query over 4 blocks
    p = torch.zeros(1, 4, 1, 4)
    p[0, 0, 0] = torch.tensor([0.0, 0.6, 0.0, 0.4])  # head 0 (group 0)
    p[0, 1, 0] = torch.tensor([0.0, 0.0, 0.5, 0.5])  # head 1 (group 0)
    p[0, 2, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # head 2 (group 1)
    imp = nsa.block_importance(p, n_kv=2, n_sel=4, block=4, stride=4, select_block=4)
    assert imp.shape == (1, 2, 1, 4)
    assert torch.allclose(imp[0, 0, 0], torch.tensor([0.0, 0.6, 0.5, 0.9]))
    assert torch.allclose(imp[0, 1, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_selection_is_sparse_and_shared_within_a_gqa_group(model):
    layer = model.model.layers[0].self_attn
    x, pe = _layer_inputs(model, T)
    seen = {}

    def spy(q, k, v, allowed, scaling):
        seen.setdefault("masks", []).append(allowed)
        return original(q, k, v, allowed, scaling)

    original = nsa._attend
    nsa._attend = spy
    try:
        with torch.no_grad():
            layer(x, position_embeddings=pe)
    finally:
        nsa._attend = original
    sel = seen["masks"][1]  # order of calls: compressed, selected, window
    assert sel.shape == (2, SPEC.n_heads, T, T)
    assert not sel.triu(1).any()  # causal
    assert int(sel[:, :, -1].sum(-1).max()) <= NSA["nsa_selected"] * NSA["nsa_select_block"]
    # heads 0,1 share KV head 0 and read the same tokens; the two groups may differ
    assert torch.equal(sel[:, 0], sel[:, 1]) and torch.equal(sel[:, 2], sel[:, 3])


def test_strictly_causal(model):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, SPEC.vocab_size, (1, T), generator=g)
    changed = ids.clone()
    changed[:, 25:] = torch.randint(0, SPEC.vocab_size, (1, T - 25), generator=g)
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, :25], b[:, :25], atol=1e-6)
    assert not torch.allclose(a[:, 25:], b[:, 25:], atol=1e-3)


def test_decode_with_cache_matches_full_forward(model):
    from transformers import DynamicCache

    ids = torch.randint(0, SPEC.vocab_size, (2, T), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :11], cache=cache, use_cache=True).logits]  # prefill, then one token at a time
        for t in range(11, T):
            steps.append(model(ids[:, t : t + 1], cache=cache, use_cache=True).logits)
    assert cache.get_seq_length() == T
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)
    # the cache holds the raw K/V of the three branches: 3 x 2 x n_kv x head_dim values a token a layer
    layer0 = cache.layers[0]
    assert layer0.keys.shape == (2, SPEC.kv_heads, T, 3 * SPEC.head_dim)


def test_generate_and_training_step_reach_every_parameter():
    model = zoo.build(SPEC, seed=0)
    ids = torch.randint(0, SPEC.vocab_size, (2, T), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model.generate(ids[:, :8], max_new_tokens=4, do_sample=False)
    assert out.shape == (2, 12)
    model.train()
    model(ids, labels=ids).loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
    assert no_grad == []  # gates, both compressors, all three branches' K/V get gradients
