"""The reasoning substrate: the task's checker, sampling cost against the zoo and the real
cache, test-time procedures' invariants, a policy that learns, the artifact round trip."""

import pytest
import torch

from shared import config, reasoning as R, zoo
from shared.progress import silent
from shared.timing import pinned_threads
from shared.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(attention="gqa", d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64)
TASK = R.TaskParams(modulus=5, ops="+", train_difficulty=(1, 1), eval_difficulty=1)


def untrained(seed=0, **changes):
    spec = R.resolve_spec(R.Spec(**(TINY | changes)), TASK)
    return R.as_policy(zoo.build(spec, seed=seed), spec)


@pytest.fixture(scope="module")
def trained():
    """A small policy after a few seconds of SFT on one-step problems mod 5: it has the task
    (lr 0.005; at 0.02-0.03 it stalls at chance). One thread: a module fixture runs before the
    function-scoped one_thread."""
    cfg = TrainConfig(steps=300, batch_size=32, seq_len=R.sequence_length(1, 5), lr=5e-3, warmup_steps=10,
                      weight_decay=0.0, log_every=50)
    spec = R.resolve_spec(R.Spec(**(TINY | dict(d_model=48, d_ff=128))), TASK)
    with pinned_threads(1):
        return R.train_policy(spec, TASK, cfg, seed=0, progress=silent)


# ----------------------------------------------------------------------------- the task
def test_checker_on_hand_cases():
    p = R.make_problem(3, [("*", 5), ("+", 1), ("-", 8)], modulus=10)
    assert p.prompt == "3a*5b+1c-8?"
    assert p.steps == ("a3*5=5", "b5+1=6", "c6-8=8") and p.answer == 8 and p.difficulty == 3
    assert R.solution(p) == "a3*5=5;b5+1=6;c6-8=8;#8"
    assert R.check(p, R.solution(p)) and R.check(p, "#8") and not R.check(p, "a3*5=5;#7")
    assert R.answer_of("1;#08") == 8 and R.answer_of("1;2;") is None and R.answer_of("#") is None
    assert R.answer_of("#1#") is None  # the last '#' counts, and nothing follows it
    assert R.split_steps("a3*5=5;b5+1=7;c6-") == ["a3*5=5", "b5+1=7"]  # only finished steps
    assert R.step_correct(p, "a3*5=5;b5+1=7;c7-8=9;#9") == [True, False, False]
    assert R.step_correct(p, "a3*5=5;b5+1=6;c6-8=8;d8-8=0;#0") == [True, True, True, False]  # an extra step
    assert R.step_correct(p, "b3*5=5;") == [False]  # a wrong label is a wrong step
    oracle = R.OracleVerifier()
    assert oracle.score_rows([p, p], ["a3*5=5;b5+1=7;", R.solution(p)]) == [([1.0, 0.0], None), ([1.0] * 3, 1.0)]
    assert oracle.score_many([p], ["a3*5=5;b5+1=7;"]) == ([[1.0, 0.0]], [0.0])
    assert oracle._run([p], ["#8"]) == [([], 1.0)]
    q = R.make_problem(12, [("-", 20)], modulus=23)  # two-digit numbers, mod 23
    assert R.solution(q) == "a12-20=15;#15"


def test_step_valid_is_the_local_check():
    """step_valid: right given what is written before (a slip's successors can be valid, not gold)."""
    p = R.make_problem(3, [("*", 5), ("+", 1), ("-", 8)], modulus=10)
    assert R.step_valid(p, R.solution(p)) == [True, True, True]
    slip = "a3*5=4;b4+1=5;c5-8=7;#7"  # a wrong result, then correct steps from it
    assert R.step_valid(p, slip) == [False, True, True] and R.step_correct(p, slip) == [False, False, False]
    assert R.step_valid(p, "a3*5=5;b6+1=7;") == [True, False]  # carries a value that was not written
    assert R.step_valid(p, "a3*5=5;b5-1=4;") == [True, False]  # not the prompt's operation
    assert R.step_valid(p, "a3*5=5;c5+1=6;") == [True, False]  # wrong label
    assert R.step_valid(p, "a3*5=5;b5+1=6;c6-8=8;d8-8=0;") == [True] * 3 + [False]  # no fourth operation
    assert R.step_valid(p, "a3*5;b5+1=6;") == [False, False]  # malformed: nothing to carry
    q = R.make_problem(12, [("-", 20), ("*", 2)], modulus=23)
    assert R.step_valid(q, "a12-20=14;b14*02=05;") == [False, True]


def test_a_completion_without_answer_scores_zero():
    """Garbage without an answer scores 0 (it used to tie a correct answer at 1); a prefix of
    whole steps keeps its steps' min (beam search); best-of-N never picks an answerless one."""
    p = R.make_problem(3, [("*", 5), ("+", 1)], modulus=10)
    oracle = R.OracleVerifier()
    _, scores = oracle.score_many([p] * 5, ["", "1+*", "a3*5=5;b5+", "a3*5=5;", R.solution(p)])
    assert scores == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert R._aggregate([], None, "") == 0.0 and R._aggregate([0.9], None, "a3*5=5;") == 0.9
    pool = R.Samples(texts=[["a3*5=5;", "", R.solution(p), "a3*5=5;b5+1=6;"]], token_ids=[[[], [], [], []]],
                     logprobs=None, cost=R.Cost(), seq_costs=[[R.Cost()] * 4], cache_bytes=0)
    for n in (2, 4):  # the answerless ones come first and score 1 on their steps: still not chosen
        res = R.best_of_n(None, [p], n, oracle, samples=pool)
        assert res.extra["texts"] == [R.solution(p) if n == 4 else "a3*5=5;"] and res.extra["scores"][0] == 0.0


def test_generate_is_deterministic_and_difficulty_sets_steps():
    a, b = R.generate(20, 3, seed=1), R.generate(20, 3, seed=1)
    assert a == b and a != R.generate(20, 3, seed=2)
    assert {p.difficulty for p in a} == {3} and all(len(p.steps) == 3 for p in a)
    assert {len(p.steps) for p in R.generate(10, 5, seed=1)} == {5}
    ranged = R.generate(200, (2, 4), seed=0)
    assert {p.difficulty for p in ranged} == {2, 3, 4}
    for p in ranged:  # gold solutions check, fit sequence_length, round-trip the vocabulary
        text = R.solution(p)
        assert R.check(p, text) and all(R.step_correct(p, text))
        assert R.decode(R.encode(text)) == text
        assert len(R.prompt_ids(p, text)) + 1 <= R.sequence_length(p.difficulty)


def test_errors_name_the_argument():
    pol = untrained()
    p = R.generate(2, 1, seed=0, modulus=5)
    for call, name in [
        (lambda: R.generate(-1, 2, 0), "n:"),
        (lambda: R.generate(2, 0, 0), "difficulty:"),
        (lambda: R.generate(2, (3, 2), 0), "difficulty:"),
        (lambda: R.generate(2, 2, 0, ops="/"), "ops:"),
        (lambda: R.encode("1+X"), "text:"),
        (lambda: R.sample(pol, p, n=0), "n:"),
        (lambda: R.sample(pol, p, temperature=-1), "temperature:"),
        (lambda: R.sample(pol, p, prefix=["", "", ""]), "prefix:"),
        (lambda: R.extend(pol, p, [""]), "problems:"),
        (lambda: R.beam_search(pol, p, 0, R.OracleVerifier()), "width:"),
        (lambda: R.beam_search(pol, p, 4, R.OracleVerifier(), beams=5), "beams:"),
        (lambda: R.revise(pol, p, 1), "verifier:"),
        (lambda: R.best_of_n(pol, p, 0, R.OracleVerifier()), "n:"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}"):
            call()
    base = {"device": "cpu", "num_threads": 1, "task": {}, "policies": {"a": TINY}, "error_rate": 0.0,
            "sft": {"steps": 2, "batch_size": 2, "seq_len": 10}, "eval": {"problems": 2, "samples": 1},
            "prm": {"model": TINY, "train": {"steps": 2, "batch_size": 2, "seq_len": 200}, "problems": 2,
                    "samples": 1, "eval_problems": 2}}
    with pytest.raises(config.ParamError, match="sft.seq_len"):
        config.validate_section(R.Params, base, "reasoning")


# ----------------------------------------------------------------------------- sampling and cost
def test_cost_equals_the_zoo_and_the_real_cache():
    pol = untrained()
    p = R.generate(1, 2, seed=3, modulus=5)
    s = R.sample(pol, p, n=1, temperature=0, max_new_tokens=7)
    P, G = len(R.prompt_ids(p[0])), len(s.token_ids[0][0])
    spec, bpt = pol.spec, zoo.kv_cache_bytes_per_token(pol.spec, bytes_per_value=4, layout="transformers")
    assert s.cost.tokens == G and s.cost.prompt_tokens == P
    assert s.cost.flops == sum(zoo.forward_flops_per_token(spec, c) for c in range(1, P + G))
    assert s.cost.kv_bytes_read == bpt * sum(P + i - 1 for i in range(1, G + 1))
    assert s.cost.calls == G  # one prefill, then one forward per further token
    if G == 7:  # no EOS: the real cache of one sequence holds every fed token
        assert s.cost.kv_bytes_peak == s.cache_bytes == bpt * (P + G - 1)
    many = R.sample(pol, R.generate(3, 2, seed=4, modulus=5), n=4, seed=1)
    assert many.cost.flops == sum(c.flops for row in many.seq_costs for c in row)
    assert many.cost.tokens == sum(len(t) for row in many.token_ids for t in row)
    assert (many.cost + s.cost).tokens == many.cost.tokens + s.cost.tokens


def test_sampling_is_deterministic_batched_and_greedy_at_zero():
    pol = untrained()
    ps = R.generate(4, (1, 3), seed=0, modulus=5)
    a = R.sample(pol, ps, n=3, seed=7, return_logprobs=True)
    b = R.sample(pol, ps, n=3, seed=7, return_logprobs=True, batch_size=2)  # other batches, per-length groups
    assert a.texts == R.sample(pol, ps, n=3, seed=7).texts
    assert [len(r) for r in a.texts] == [3] * 4 and all(len(lp) == len(t) for r1, r2 in zip(a.logprobs, a.token_ids)
                                                         for lp, t in zip(r1, r2))
    assert b.cost.tokens > 0 and all(x <= 0 for r in a.logprobs for lp in r for x in lp)
    g1, g2 = R.sample(pol, ps, n=2, temperature=0), R.sample(pol, ps, n=2, temperature=0, seed=5)
    assert g1.texts == g2.texts and all(r[0] == r[1] for r in g1.texts)
    pre = R.sample(pol, ps[:1], n=1, temperature=0, prefix="1+")
    assert pre.texts[0][0].startswith("1+")


def test_mixed_lengths_batch_with_left_padding_like_one_by_one(trained):
    """A batch of mixed prompt lengths (left-padded, masked) gives each sequence what it gets
    alone, and the cost of the sequences alone (padding is not counted)."""
    ps = TASK.generate(3, 1, seed=5) + R.generate(3, 2, seed=5, modulus=5, ops="+")
    together = R.sample(trained, ps, n=1, temperature=0, return_logprobs=True, prefix=["", "a", "", "", "a", ""])
    alone = [R.sample(trained, [p], n=1, temperature=0, return_logprobs=True, prefix=pre)
             for p, pre in zip(ps, ["", "a", "", "", "a", ""])]
    assert [r[0] for r in together.texts] == [a.texts[0][0] for a in alone]
    assert max(abs(x - y) for r, a in zip(together.logprobs, alone)
               for x, y in zip(r[0], a.logprobs[0][0])) < 1e-4
    summed = sum((a.cost for a in alone), R.Cost())
    for key in ("tokens", "prompt_tokens", "flops", "kv_bytes_read"):
        assert getattr(together.cost, key) == getattr(summed, key), key
    assert together.cost.kv_bytes_peak == sum(a.cost.kv_bytes_peak for a in alone)  # one batch: all at once
    assert together.cost.calls < summed.calls  # one batch instead of six


# ----------------------------------------------------------------------------- policies and search
def test_trained_policy_beats_chance(trained):
    """After seconds of SFT the policy solves one-step problems (chance: 1 / 5) with correct steps."""
    probs = TASK.generate(40, 1, seed=123)
    res = R.sample(trained, probs, n=1, temperature=0)
    assert sum(R.check(p, r[0]) for p, r in zip(probs, res.texts)) >= 0.6 * len(probs)
    assert sum(R.step_correct(p, r[0]) == [True] for p, r in zip(probs, res.texts)) >= 0.6 * len(probs)
    assert trained.summary["final_train_loss"] < 0.3  # untrained: ln(VOCAB_SIZE) = 3.8; at chance: ~0.6


def test_best_of_n_with_oracle_is_monotone(trained):
    probs = TASK.generate(30, 1, seed=9)
    pool = R.sample(trained, probs, n=8, seed=3)
    accs = [R.best_of_n(trained, probs, n, R.OracleVerifier(), samples=pool).accuracy for n in (1, 2, 4, 8)]
    assert accs == sorted(accs)
    costs = [R.best_of_n(trained, probs, n, R.OracleVerifier(), samples=pool).cost.tokens for n in (1, 2, 4, 8)]
    assert costs == sorted(costs)
    mv = R.majority_vote(trained, probs, 8, samples=pool)
    assert len(mv.answers) == 30 and mv.cost.tokens == costs[-1]


def test_beam_width_one_is_greedy_and_revision_helps_with_oracle(trained):
    probs = TASK.generate(12, 1, seed=11)
    greedy = R.sample(trained, probs, 1, temperature=0)
    beam = R.beam_search(trained, probs, 1, R.OracleVerifier(), temperature=0, max_step_tokens=40)
    assert beam.extra["texts"] == [r[0] for r in greedy.texts]
    wide = R.beam_search(trained, probs, 4, R.OracleVerifier(), seed=1)
    assert wide.accuracy >= beam.accuracy and wide.cost.tokens > beam.cost.tokens
    rev = R.revise(trained, probs, 3, R.OracleVerifier(), seed=2)
    first = R.sample(trained, probs, 1, seed=2)
    assert rev.accuracy >= sum(R.check(p, r[0]) for p, r in zip(probs, first.texts)) / len(probs)
    assert all(len(a) == u + 1 for a, u in zip(rev.extra["attempts"], rev.extra["rounds_used"]))


# ----------------------------------------------------------------------------- the artifact
def test_build_and_load_round_trip(tmp_path):
    micro = dict(attention="mqa", d_model=16, n_layers=1, n_heads=2, d_ff=32)
    values = {"device": "cpu", "num_threads": 1, "error_rate": 0.1,
              "task": {"modulus": 5, "train_difficulty": [1, 2], "eval_difficulty": 2},
              "policies": {"a": micro, "b": micro | {"d_model": 24}},
              "sft": {"steps": 3, "batch_size": 4, "seq_len": 40, "lr": 0.01, "eval_batches": 1},
              "prm": {"model": micro, "train": {"steps": 3, "batch_size": 4, "seq_len": 40, "lr": 0.01, "eval_batches": 1},
                      "problems": 4, "samples": 2, "eval_problems": 4, "labels": "valid", "window": 4,
                      "freeze_backbone": True},
              "eval": {"problems": 4, "samples": 2}}
    params = config.validate_section(R.Params, values, "reasoning")
    summary = R.build(params, tmp_path, {}, seed=0, progress=silent)
    assert list(summary["policies"]) == ["a", "b"] and "step_auroc" in summary["prm"]
    assert summary["policies"]["b"]["params"] > summary["policies"]["a"]["params"]
    pols = R.load_policies(tmp_path)
    assert list(pols) == ["a", "b"] and pols["a"].spec.vocab_size == R.VOCAB_SIZE
    assert torch.equal(next(R.load_policy(tmp_path, "b").model.parameters()), next(pols["b"].model.parameters()))
    with pytest.raises(ValueError, match="^policy: 'large' is not in the artifact \\(it has a, b\\)$"):
        R.load_policy(tmp_path, "large")
    task = R.load_task(tmp_path)
    assert task.modulus == 5
    prm = R.load_prm(tmp_path)
    probs = task.generate(3, seed=1)
    texts = [R.solution(p) for p in probs]
    steps, scores = prm.score_many(probs, texts)
    assert [len(s) for s in steps] == [2, 2, 2] and all(0 <= x <= 1 for x in scores)
    assert prm.score_steps(probs[0], texts[0]) == pytest.approx(steps[0], abs=1e-6)
    rows = prm.score_rows(probs, texts + [])
    assert rows == prm._run(probs, texts) and [s for s, _ in rows] == steps
    assert [R._aggregate(s, o, t) for (s, o), t in zip(rows, texts)] == scores and all(o is not None for _, o in rows)
    assert all(s == sorted(s, reverse=True) for s in steps)  # running mins: P(no error up to this step)
    assert prm.net.window == 4 and summary["prm"]["labels"] == "valid"
    assert prm.score(probs[0], texts[0]) == pytest.approx(min(steps[0] + [prm.outcome(probs[0], texts[0])]))
    again = R.build(params, tmp_path, {}, seed=0, progress=silent)  # resumable: everything is kept
    assert again == summary | {"device": "cpu"}
    assert torch.equal(next(pols["a"].model.parameters()), next(R.load_policies(tmp_path)["a"].model.parameters()))
