"""The training loop: schedules, learning, evaluation, and exact resumption."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from shared import config, trainer
from shared.trainer import TrainConfig

VOCAB, SEQ, BATCH = 64, 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(seed=0, dropout=0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=SEQ, tie_word_embeddings=True, attention_dropout=dropout,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


# A learnable stream: a short random "vocabulary" of 8-token phrases repeated in random order.
_GEN = torch.Generator().manual_seed(0)
_PHRASES = torch.randint(0, VOCAB, (6, 8), generator=_GEN)
STREAM = _PHRASES[torch.randint(0, 6, (600,), generator=_GEN)].flatten()


def batch_at(step, batch_size=BATCH, seq_len=SEQ):
    """The batch of a step, derived from (seed, step): random access, as corpus.TokenBatches."""
    gen = torch.Generator().manual_seed(10_000 + step)
    starts = torch.randint(0, len(STREAM) - seq_len - 1, (batch_size,), generator=gen)
    windows = torch.stack([STREAM[s : s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


VAL = [batch_at(-1 - i) for i in range(3)]
QUIET = dict(progress=lambda it, **kw: it)


def cfg(**kw):
    base = dict(steps=20, batch_size=BATCH, seq_len=SEQ, lr=1e-2, warmup_steps=3, eval_every=5, checkpoint_every=5, log_every=3)
    return TrainConfig(**{**base, **kw})


# --- learning-rate schedules ---------------------------------------------------------------


def test_cosine_warms_up_linearly_then_decays_to_the_floor_at_the_last_step():
    c = TrainConfig(steps=100, batch_size=1, seq_len=1, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    m = [trainer.lr_multiplier(s, c) for s in range(100)]
    assert m[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert m[10] == pytest.approx(1.0) and m[99] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(m[10:], m[11:])), "monotone after warm-up"
    assert m[54] == pytest.approx(0.55, abs=0.01), "half-way through the decay: half-way between 1 and the floor"


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_wsd_is_stable_then_decays_over_the_last_fraction(shape):
    c = TrainConfig(steps=100, batch_size=1, seq_len=1, warmup_steps=5, schedule="wsd",
                    decay_fraction=0.2, decay_shape=shape, min_lr_ratio=0.0)
    m = [trainer.lr_multiplier(s, c) for s in range(100)]
    assert m[4] == pytest.approx(1.0) and m[5:80] == pytest.approx([1.0] * 75)
    assert all(a > b for a, b in zip(m[79:], m[80:])), "strictly decaying over the last 20 steps"
    assert m[99] == pytest.approx(0.0)
    if shape == "linear":
        assert m[89] == pytest.approx(0.5)


def test_constant_schedule_after_warmup():
    c = TrainConfig(steps=10, batch_size=1, seq_len=1, warmup_steps=2, schedule="constant")
    assert [trainer.lr_multiplier(s, c) for s in range(10)] == pytest.approx([0.5] + [1.0] * 9)


def test_bad_config_fails_in_one_line_naming_the_key():
    with pytest.raises(config.ParamError, match=r"^train\.warmup_steps: must be smaller than steps \(10\) \(got 10\)$"):
        config.validate_section(TrainConfig, dict(steps=10, batch_size=1, seq_len=1, warmup_steps=10), "train")
    with pytest.raises(config.ParamError, match=r"^train\.schedul: unknown key; allowed: steps, "):
        config.validate_section(TrainConfig, dict(steps=10, batch_size=1, seq_len=1, schedul="wsd"), "train")


# --- training and evaluation ---------------------------------------------------------------


def test_training_learns_the_stream_and_records_its_history():
    model = tiny_llama()
    before = trainer.evaluate(model, VAL, "cpu")
    result = trainer.train(model, batch_at, cfg(steps=40, checkpoint_every=0), device="cpu", val_batches=VAL, **QUIET)
    h = result.history
    assert list(h.columns) == trainer.HISTORY_COLUMNS and h["step"].tolist() == list(range(1, 41))
    assert h["tokens"].iloc[-1] == result.tokens_seen == 40 * BATCH * SEQ
    assert h["val_loss"].notna().tolist() == [s % 5 == 0 for s in range(1, 41)]
    assert result.final_val_loss == h["val_loss"].iloc[-1] == pytest.approx(trainer.evaluate(model, VAL, "cpu"))
    assert before > math.log(VOCAB) - 0.3, "an untrained model is near uniform"
    assert result.final_val_loss < 0.6 * before, "the phrases are learnable"
    assert h["lr"].max() == pytest.approx(1e-2) and h["seconds"].is_monotonic_increasing
    assert result.train_seconds > 0 and result.resumed_from == 0 and model.training


def test_evaluate_is_the_token_weighted_cross_entropy_and_restores_the_mode():
    model = tiny_llama().train()
    odd = [VAL[0], (VAL[1][0][:1], VAL[1][1][:1])]  # batches of 4 and 1 sequences: weights 4:1, not 1:1
    with torch.no_grad():
        model.eval()
        first = F.cross_entropy(model(input_ids=VAL[0][0]).logits.flatten(0, 1), VAL[0][1].flatten(), reduction="sum")
        one_row = F.cross_entropy(model(input_ids=odd[1][0]).logits.flatten(0, 1), odd[1][1].flatten(), reduction="sum")
        model.train()
    want = (first + one_row) / (5 * SEQ)
    assert trainer.evaluate(model, odd, "cpu") == pytest.approx(float(want), rel=1e-5)
    assert model.training
    with pytest.raises(ValueError, match="batches: empty"):
        trainer.evaluate(model, [], "cpu")


def test_plain_module_custom_loss_and_bfloat16_autocast():
    class Bigram(torch.nn.Module):  # returns logits as a tensor, not a transformers output
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(VOCAB, VOCAB)

        def forward(self, input_ids):
            return self.table(input_ids)

    torch.manual_seed(0)
    model = Bigram()
    calls = []

    def loss_fn(m, x, y):
        calls.append(torch.is_autocast_enabled("cpu"))
        return F.cross_entropy(m(x).flatten(0, 1).float(), y.flatten())

    result = trainer.train(model, batch_at, cfg(steps=30, dtype="bfloat16", checkpoint_every=0, lr=0.1), device="cpu",
                           val_batches=VAL, loss_fn=loss_fn, **QUIET)
    assert all(calls) and len(calls) == 30 + 6 * len(VAL), "every step and evaluation ran under bf16 autocast"
    assert result.history["train_loss"].iloc[-1] < 0.8 * result.history["train_loss"].iloc[0]


def test_moe_auxiliary_loss_is_added_with_the_config_coefficient():
    logits = torch.randn(BATCH, SEQ, VOCAB)
    x, y = VAL[0]

    class FakeMoE:  # what a transformers MoE with output_router_logits returns
        config = SimpleNamespace(router_aux_loss_coef=0.01)

        def __call__(self, input_ids):
            return SimpleNamespace(logits=logits, aux_loss=torch.tensor(2.0))

    ce = float(F.cross_entropy(logits.flatten(0, 1), y.flatten()))
    assert float(trainer.training_loss(FakeMoE(), x, y)) == pytest.approx(ce + 0.02, rel=1e-6)
    assert float(trainer.cross_entropy(FakeMoE(), x, y)) == pytest.approx(ce, rel=1e-6), "evaluation: CE alone"


def test_a_diverging_run_stops_with_the_step():
    calls = []

    def nan_from_the_fifth_step(m, x, y):
        calls.append(1)
        loss = trainer.cross_entropy(m, x, y)
        return loss * float("nan") if len(calls) >= 5 else loss

    with pytest.raises(FloatingPointError, match=r"^train: loss is nan at step 5 "):
        trainer.train(tiny_llama(), batch_at, cfg(checkpoint_every=0), device="cpu", loss_fn=nan_from_the_fifth_step, **QUIET)


def test_batches_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"batches: step 0 gave x of shape \(4, 8\), cfg wants \(4, 16\)"):
        trainer.train(tiny_llama(), lambda s: batch_at(s, seq_len=8), cfg(), device="cpu", **QUIET)


# --- resuming ------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def interrupt_after(n):
    """A progress wrapper that dies after n steps, as a killed process would."""

    def progress(iterable, **kw):
        for i, item in enumerate(iterable):
            if i == n:
                raise Interrupt
            yield item

    return progress


def _same_history(a, b):
    cols = [c for c in trainer.HISTORY_COLUMNS if c != "seconds"]  # wall-clock differs run to run
    assert a[cols].equals(b[cols])


@pytest.mark.parametrize("source", ["callable", "indexable", "iterable"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, source):
    def data():  # batches[step] (corpus.TokenBatches, a list), batches(step), or replayed from the start
        if source == "indexable":
            return [batch_at(s) for s in range(20)]
        return batch_at if source == "callable" else (batch_at(s) for s in range(10**6))

    run = cfg(steps=20)
    whole = tiny_llama(dropout=0.2)  # dropout: the RNG state must be restored as well
    full = trainer.train(whole, data(), run, device="cpu", out_dir=tmp_path / "a", val_batches=VAL, seed=3, **QUIET)

    broken = tiny_llama(dropout=0.2)
    with pytest.raises(Interrupt):
        trainer.train(broken, data(), run, device="cpu", out_dir=tmp_path / "b", val_batches=VAL, seed=3,
                      progress=interrupt_after(12))  # the last checkpoint is at step 10
    assert torch.load(tmp_path / "b" / trainer.CHECKPOINT, weights_only=True)["step"] == 10
    resumed_model = tiny_llama(seed=99, dropout=0.2)  # other initial weights: they come from the checkpoint
    resumed = trainer.train(resumed_model, data(), run, device="cpu", out_dir=tmp_path / "b", val_batches=VAL, seed=3, **QUIET)

    assert resumed.resumed_from == 10
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(a, b), name
    _same_history(full.history, resumed.history)
    assert resumed.final_val_loss == full.final_val_loss
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [trainer.CHECKPOINT], "no temporary file left"


def test_a_finished_run_is_not_trained_again_and_other_configs_are_refused(tmp_path):
    first = tiny_llama()
    done = trainer.train(first, batch_at, cfg(steps=10), device="cpu", out_dir=tmp_path, val_batches=VAL, **QUIET)
    fresh = tiny_llama(seed=5)
    again = trainer.train(fresh, lambda s: pytest.fail("trained again"), cfg(steps=10), device="cpu",
                          out_dir=tmp_path, val_batches=VAL, **QUIET)
    assert again.resumed_from == 10 and again.final_val_loss == done.final_val_loss
    _same_history(done.history, again.history)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), fresh.parameters())), "weights restored"
    with pytest.raises(ValueError, match=r"checkpoint\.pt: written by a run with another config \(lr: 0\.01 -> 0\.02\); delete it"):
        trainer.train(tiny_llama(), batch_at, cfg(steps=10, lr=2e-2), device="cpu", out_dir=tmp_path, **QUIET)
    with pytest.raises(ValueError, match=r"another config \(seed: 0 -> 1\)"):
        trainer.train(tiny_llama(), batch_at, cfg(steps=10), device="cpu", out_dir=tmp_path, seed=1, **QUIET)
