"""Parallel scaling (shared/parscale.py): the wrapper's structure, streams, aggregation, cache and training."""

import pytest
import torch

from shared import metrics, parscale, trainer, zoo

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = zoo.ModelSpec(attention="gqa", vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                     max_seq_len=64)


def ids(batch=2, length=12, seed=0):
    return torch.randint(0, SPEC.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_one_stream_is_the_base_model():
    base = zoo.build(SPEC, seed=0)
    assert parscale.wrap(base, streams=1, prefix_len=8) is base
    assert parscale.extra_params_for(SPEC, 1, 8) == 0


def test_shapes_params_and_base_weights_untouched():
    base = zoo.build(SPEC, seed=0)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = parscale.wrap(base, streams=3, prefix_len=5, seed=1)
    out = model(input_ids=ids())
    assert out.logits.shape == (2, 12, SPEC.vocab_size)
    added = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in base.parameters())
    assert added == parscale.extra_params_for(SPEC, 3, 5)
    assert model.prefix_k.shape == (SPEC.n_layers, 3, SPEC.kv_heads, 5, SPEC.head_dim)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_deterministic_structure_reloads_state_dict():
    trained = parscale.wrap(zoo.build(SPEC, seed=0), streams=2, prefix_len=4, seed=3)
    with torch.no_grad():
        trained.prefix_k.add_(0.5)  # something a fresh wrap would not have
    fresh = parscale.wrap(zoo.build(SPEC, seed=7), streams=2, prefix_len=4, seed=0)
    fresh.load_state_dict(trained.state_dict())
    x = ids()
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=x).logits, trained(input_ids=x).logits)


def test_streams_differ_only_by_their_prefix():
    model = parscale.wrap(zoo.build(SPEC, seed=0), streams=3, prefix_len=4, seed=0)
    x = ids()
    with torch.no_grad():
        hidden, _ = model.stream_hidden(x)
        assert not torch.allclose(hidden[0], hidden[1], atol=1e-6)  # different prefixes: different streams
        model.prefix_k[:, 1] = model.prefix_k[:, 0]
        model.prefix_v[:, 1] = model.prefix_v[:, 0]
        hidden, _ = model.stream_hidden(x)
    assert torch.allclose(hidden[0], hidden[1], atol=1e-6)  # same prefix, same weights: the same stream
    assert not torch.allclose(hidden[0], hidden[2], atol=1e-6)


def test_every_token_sees_the_prefix_and_attention_stays_causal():
    model = parscale.wrap(zoo.build(SPEC, seed=0), streams=2, prefix_len=4, seed=0)
    x = ids(batch=1)
    with torch.no_grad():
        hidden, _ = model.stream_hidden(x)
        model.prefix_v[:, 0] += 1.0  # stream 0's prefix values change ...
        changed, _ = model.stream_hidden(x)
        later = x.clone()
        later[0, 6] = (later[0, 6] + 1) % SPEC.vocab_size
        after, _ = model.stream_hidden(later)
    moved = (changed[0] - hidden[0]).abs().amax(-1)[0]
    assert (moved > 1e-4).all()  # ... every position of stream 0 moves, the first token's too
    assert torch.equal(changed[1], hidden[1])  # stream 1 does not
    assert torch.equal(after[:, :, :6], changed[:, :, :6])  # a later token never changes earlier positions


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_aggregation_weights_sum_to_one_and_respect_eps(smoothing):
    P = 4
    model = parscale.wrap(zoo.build(SPEC, seed=0), streams=P, prefix_len=2, smoothing=smoothing, seed=0)
    with torch.no_grad():
        model.aggregate[2].bias.copy_(torch.tensor([20.0, -20.0, 0.0, -20.0]))  # nearly one-hot softmax
        w = model.stream_weights(ids())
    assert w.shape == (2, 12, P)
    assert torch.allclose(w.sum(-1), torch.ones(2, 12), atol=1e-6)
    assert w.min() >= smoothing / P - 1e-7
    assert w.max() <= 1 - smoothing + smoothing / P + 1e-6
    assert w[..., 0].min() >= 1 - smoothing - 1e-6  # the softmax's choice keeps (1 - eps) of the weight


def test_cached_decode_equals_full_forward():
    model = parscale.wrap(zoo.build(SPEC, seed=0), streams=3, prefix_len=4, seed=0)
    x = ids(length=14)
    with torch.no_grad():
        full = model(input_ids=x).logits
        out = model(input_ids=x[:, :9], use_cache=True)
        pieces, cache = [out.logits], out.cache
        for t in range(9, 14):
            out = model(input_ids=x[:, t : t + 1], cache=cache, use_cache=True)
            pieces.append(out.logits)
            cache = out.cache
    assert cache.get_seq_length() == 4 + 14
    assert parscale.kv_cache_bytes(cache) == 2 * SPEC.n_layers * 3 * 2 * SPEC.kv_heads * 18 * SPEC.head_dim * 4
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        last = model(input_ids=x, logits_to_keep=1).logits
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=1e-5)


def test_metrics_latency_helper_runs_on_a_parscale_model():
    model = parscale.wrap(zoo.build(SPEC, seed=0), streams=2, prefix_len=4, seed=0)
    row = metrics.prefill_decode_latency(model, batch_size=1, prompt_len=6, new_tokens=3, repeats=1, warmup=0)
    assert row["cache_len"] == 4 + 6 + 2  # the prefix stays in the cache


def test_a_few_training_steps_reduce_the_loss():
    model = parscale.wrap(zoo.build(SPEC, seed=0), streams=2, prefix_len=4, seed=0)
    x = ids(batch=4, length=16, seed=1)
    batch = (x[:, :-1], x[:, 1:])
    before = trainer.evaluate(model, [batch], "cpu")
    cfg = trainer.TrainConfig(steps=15, batch_size=4, seq_len=15, lr=1e-2, log_every=5)
    trainer.train(model, [batch] * 15, cfg, device="cpu", progress=lambda it, **kw: it)
    assert trainer.evaluate(model, [batch], "cpu") < before - 0.5
    fresh = parscale.wrap(zoo.build(SPEC, seed=0), streams=2, prefix_len=4, seed=0)
    # trained through the prefixes, not only the base weights
    assert not torch.allclose(model.prefix_k, fresh.prefix_k)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(streams=0, prefix_len=4), "streams"),
        (dict(streams=2, prefix_len=0), "prefix_len"),
        (dict(streams=2, prefix_len=4, smoothing=1.5), "smoothing"),
    ],
)
def test_bad_arguments_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parscale.ParScaleLM(zoo.build(SPEC, seed=0), **kwargs)


def test_mla_base_is_refused():
    mla = zoo.ModelSpec(attention="mla", vocab_size=64, d_model=32, n_layers=1, n_heads=4, d_ff=64, max_seq_len=32,
                        kv_lora_rank=8)
    with pytest.raises(ValueError, match="base: ParScale prefixes need Llama-style"):
        parscale.wrap(zoo.build(mla, seed=0), streams=2, prefix_len=2)
