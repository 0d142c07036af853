"""The reasoning substrate: a checkable multi-step task, tiny policies, a PRM, sampling with cost, search.

Papers on test-time scaling and RL for reasoning (08 SCALE, 10 ScaleRL, 13 Kinetics, 20
test-time scaling laws, 24 ETS, 34 RL scaling) need the same pieces at toy scale, so they live
here once:

**The task** (:func:`generate`): modular arithmetic chains with a step-by-step solution. A
problem of difficulty ``d`` has a start value and ``d`` operations, every number written with
the same width ``w`` (the digits of ``modulus - 1``), so prompts and steps of one difficulty
have one length (batches need no padding); operation k carries the label ``LABELS[k]``:

    prompt      "07a+05b*03c-08?"                      start 7, then +5, *3, -8 (mod 23)
    solution    "a07+05=12;b12*03=13;c13-08=05;#05"    one step per operation, then the answer

A step is ``<label><previous><op><operand>=<result>;``, the answer ``#<value>``. The labels make
the multi-step task learnable by a tiny model in minutes: without them, finding operation k
in the prompt needs counting (digits repeat, so the previous operand is no unique key); with
them a step writes the next label (a local rule) and copies what follows that label in the
prompt (an induction head). :func:`check` compares
the answer only (outcome reward); :func:`step_correct` says for every written step whether it
is the gold step (the same text: right carried value, operation and result), which is what a
process reward model learns. Characters come from :data:`VOCAB`; ids 0-2 are PAD, BOS, EOS
(:func:`encode`, :func:`decode`). A policy sees ``BOS + prompt`` and writes the solution, EOS.

**Policies** (:func:`train_policy`, the artifact's :func:`build`): tiny Llamas from
shared.zoo, fine-tuned with shared.trainer on gold solutions (loss on the solution tokens
only), a few with a corrupted step (``error_rate``) so that samples are diverse. What was
measured (1 thread, mod 7, batches of 32): a tiny model learns this task in a sudden
transition (first the format, then copying the operation and operand after their label, an
induction head that needs 2 layers, then the table), after ~1000 SFT steps for a 3-layer
d_model 48-64 model and after 2000-2500 for a 2-layer d_model 24-32 one; at lr >= 0.01 every
size stalls before the copy (the first cpu policies, at lr 0.02, stayed at chance). A fixed
SFT budget therefore leaves the sizes at different points of learning: the pass rate grows
with size, with room for best-of-N, revision and RL. Sampling at temperature 1 reproduces
the ``error_rate`` slips, so even a policy that has the task passes a d-step chain about
``(1 - error_rate) ** d`` of the time (greedy decoding: always).

**Verifiers**: :class:`Verifier`, a trained process reward model (a zoo Llama backbone with a
linear head: a probability at every step's ``;`` and P(answer correct) at the answer's last
digit), trained on the policies' own samples. Step labels (``prm.labels``): "gold"
(:func:`step_correct`: every step after a slip is wrong too, so the head at a ``;`` must see an
earlier slip) or "valid" (:func:`step_valid`: the step is right given its written prefix, a
local check); the answer is labelled by :func:`check` either way. ``score_steps`` returns the
RUNNING MIN of the head's step probabilities: step k's score is P(no error in steps 1..k), so
it is meant to match :func:`step_correct` whatever the labels (the first doubtful step is where
the chain broke). With ``prm.window`` > 0 the head also reads the LM's log-probabilities of the
last ``window`` tokens and their min (:class:`PRMNet`), and ``prm.freeze_backbone`` keeps the
backbone the ``init_from`` policy's: a slip is a token the task-trained large policy did not
expect. Measured at cpu scale (mod 7, held-out samples of all three policies): fine-tuning the
backbone with a hidden-state head reached step AUROC 0.61-0.75, outcome AUROC 0.62-0.67 (gold or
valid labels, 600-1500 steps); the min log-prob of a step's tokens under the large policy alone
ranks valid steps at AUROC 0.998; the frozen backbone + surprise head with valid labels (600
steps, 13 s) reaches step AUROC 0.98, outcome AUROC 0.93. :class:`OracleVerifier` is the exact
checker with the same interface (tests, upper bounds).
Both score batches: ``score_rows(problems, completions)`` gives per completion (step scores,
answer score or None), ``score_many`` the step scores and the aggregate score: the min of the
step scores and the answer's; without an answer, a prefix of whole steps (ending in ``;``) gets
its steps' min and anything else scores 0 (:func:`best_of_n` also never prefers a completion
without an answer).

**Sampling** (:func:`sample`, :func:`extend`): batched over problems x n with transformers'
DynamicCache (passed as ``cache=``, transformers 5's name for ``past_key_values``) (prefill,
then one token per forward), sequences sorted by length (deterministic order) and batched
across lengths: a batch of mixed lengths is left-padded, with an attention mask and per-row
position ids (the same tokens as one by one, logits equal to ~1e-6; a batch of one length
runs unpadded), temperature 0 = greedy. Every call returns a :class:`Cost`, counted
analytically per sequence from shared.zoo (tested against the real cache and the zoo):
a sequence with P prompt tokens that generates G tokens feeds P + G - 1 tokens (the last one
is never fed), so ``flops = sum_{c=1}^{P+G-1} zoo.forward_flops_per_token(spec, c)``, and
generating token i reads the KV of the P + i - 1 tokens before it, ``kv_bytes_read =
bytes_per_token * sum_i (P + i - 1)``. Padding waste inside a batch is not counted.

**Test-time procedures**, each returning a :class:`SearchResult` with answers, correctness
and cost: :func:`best_of_n`, :func:`majority_vote`, :func:`revise` (sequential: keep the
prefix the verifier trusts, re-sample from the first doubtful step) and :func:`beam_search`
(step-level, PRM-scored; :func:`extend` is its building block and what other searches use).

Errors are one line naming the argument. torch and transformers are imported where used, so
``import shared.reasoning`` is cheap (paper configs use :class:`Params`).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.paths import write_text_atomic
from shared.trainer import TrainConfig
from shared.zoo import ModelSpec

ARTIFACT = "reasoning"
REQUIRES: tuple[str, ...] = ()

# ----------------------------------------------------------------------------- defaults
MODULUS = 23  # arithmetic mod this prime: 23 x 23 tables per operation, learnable by a tiny model
OPS = "+-*"
BATCH_SIZE = 256  # sequences per forward in sample/extend/verifier scoring
SUMMARY = "summary.json"  # written last into every model folder: marks it complete
HEAD_FILE = "head.safetensors"  # the PRM's linear head, beside its backbone

LABELS = "abcdefghijklmnopqrstuvwxyz"  # step k (0-based) is labelled LABELS[k], in the prompt and its step
VOCAB = "0123456789+-*=;#?" + LABELS  # characters; their ids follow the special ids
PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3
VOCAB_SIZE = N_SPECIAL + len(VOCAB)
STEP_END, ANSWER, PROMPT_END = ";", "#", "?"
_ID = {ch: i + N_SPECIAL for i, ch in enumerate(VOCAB)}


# ----------------------------------------------------------------------------- vocabulary
def encode(text: str) -> list[int]:
    """Token ids of ``text`` (one per character); no BOS/EOS added."""
    try:
        return [_ID[ch] for ch in text]
    except KeyError as err:
        raise ValueError(f"text: character {err.args[0]!r} is not in VOCAB {VOCAB!r}") from None


def decode(ids: Sequence[int]) -> str:
    """The characters of ``ids``; PAD, BOS and EOS are dropped."""
    return "".join(VOCAB[i - N_SPECIAL] for i in ids if i >= N_SPECIAL)


# ----------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class Problem:
    prompt: str
    steps: tuple[str, ...]  # gold step texts, without the trailing ";"
    answer: int
    difficulty: int  # number of steps
    start: int
    ops: tuple[tuple[str, int], ...]  # (operation, operand) per step
    modulus: int

    @property
    def width(self) -> int:
        return width(self.modulus)


def width(modulus: int) -> int:
    """Digits of every number of a task mod ``modulus``."""
    return len(str(modulus - 1))


def _apply(value: int, op: str, operand: int, modulus: int) -> int:
    if op == "+":
        return (value + operand) % modulus
    if op == "-":
        return (value - operand) % modulus
    return (value * operand) % modulus


def make_problem(start: int, ops: Sequence[tuple[str, int]], modulus: int = MODULUS) -> Problem:
    """The problem of a start value and operations, with its gold steps and answer."""
    w = width(modulus)
    if len(ops) > len(LABELS):
        raise ValueError(f"ops: at most {len(LABELS)} steps (one label each), got {len(ops)}")
    value, steps = start, []
    for k, (op, x) in enumerate(ops):
        new = _apply(value, op, x, modulus)
        steps.append(f"{LABELS[k]}{value:0{w}d}{op}{x:0{w}d}={new:0{w}d}")
        value = new
    prompt = f"{start:0{w}d}" + "".join(f"{LABELS[k]}{op}{x:0{w}d}" for k, (op, x) in enumerate(ops)) + PROMPT_END
    return Problem(prompt, tuple(steps), value, len(ops), start, tuple((op, x) for op, x in ops), modulus)


def _difficulty_range(difficulty: int | Sequence[int]) -> tuple[int, int]:
    lo, hi = (difficulty, difficulty) if isinstance(difficulty, int) else tuple(difficulty)
    if not 1 <= lo <= hi <= len(LABELS):
        raise ValueError(f"difficulty: needs an int in [1, {len(LABELS)}] or a range (lo, hi) with 1 <= lo <= hi <= "
                         f"{len(LABELS)}, got {difficulty!r}")
    return lo, hi


def generate(n: int, difficulty: int | Sequence[int], seed: int, modulus: int = MODULUS, ops: str = OPS) -> list[Problem]:
    """``n`` random problems; difficulty = number of steps (an int, or a (lo, hi) range drawn
    uniformly). The same arguments give the same problems."""
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    if modulus < 2:
        raise ValueError(f"modulus: must be >= 2, got {modulus}")
    if not ops or set(ops) - set(OPS):
        raise ValueError(f"ops: must be a non-empty subset of {OPS!r}, got {ops!r}")
    lo, hi = _difficulty_range(difficulty)
    rng = random.Random(f"reasoning/{seed}/{modulus}/{ops}/{lo}-{hi}")
    out = []
    for _ in range(n):
        d = rng.randint(lo, hi)
        out.append(make_problem(rng.randrange(modulus), [(rng.choice(ops), rng.randrange(modulus)) for _ in range(d)], modulus))
    return out


def solution(problem: Problem) -> str:
    """The gold completion: every step with its ';', then '#' and the answer."""
    return "".join(s + STEP_END for s in problem.steps) + f"{ANSWER}{problem.answer:0{problem.width}d}"


def answer_of(completion: str) -> int | None:
    """The value after the last '#', or None when there is none or it is not all digits."""
    if ANSWER not in completion:
        return None
    tail = completion.rsplit(ANSWER, 1)[1]
    return int(tail) if tail.isdigit() else None


def split_steps(completion: str) -> list[str]:
    """The completed steps (each ended by ';', returned without it) before the answer."""
    body = completion.split(ANSWER, 1)[0]
    return body.split(STEP_END)[:-1]


def check(problem: Problem, completion: str) -> bool:
    """Is the final answer right (the outcome reward; the steps are not looked at)?"""
    return answer_of(completion) == problem.answer


def step_correct(problem: Problem, completion: str) -> list[bool]:
    """Per written step: is it the gold step (same carried value, operation and result)?"""
    return [i < len(problem.steps) and s == problem.steps[i] for i, s in enumerate(split_steps(completion))]


def step_valid(problem: Problem, completion: str) -> list[bool]:
    """Per written step: is it right GIVEN what is written before it (a local check: its label,
    operation and operand are the prompt's k-th, it carries the previous written result (the
    start for the first step) and its arithmetic is right)? After a slip the later steps can be
    valid while no longer gold (:func:`step_correct`); the first invalid step is the first error."""
    w, m = problem.width, problem.modulus
    out, value = [], f"{problem.start:0{w}d}"
    for k, s in enumerate(split_steps(completion)):
        ok = k < len(problem.ops) and len(s) == 3 * w + 3 and s[0] == LABELS[k] and s[2 * w + 2] == "="
        if ok:
            op, x = problem.ops[k]
            carried, result = s[1:1 + w], s[-w:]
            ok = (carried == value and s[1 + w] == op and s[2 + w:2 * w + 2] == f"{x:0{w}d}" and result.isdigit()
                  and int(result) == _apply(int(carried), op, x, m))
        out.append(ok)
        value = s[-w:] if len(s) == 3 * w + 3 else None
    return out


def prompt_ids(problem: Problem, prefix: str = "") -> list[int]:
    """What a policy is fed: BOS, the prompt, and an optional start of the completion."""
    return [BOS] + encode(problem.prompt + prefix)


def sequence_length(difficulty: int, modulus: int = MODULUS) -> int:
    """Tokens of BOS + prompt + gold solution + EOS at this difficulty."""
    w = width(modulus)
    return 1 + (w + difficulty * (2 + w) + 1) + difficulty * (3 * w + 4) + (1 + w) + 1


# ----------------------------------------------------------------------------- cost
@dataclass
class Cost:
    """What a procedure spent. ``+`` adds every field but ``kv_bytes_peak``, which takes the
    max (procedures run their batches one after another)."""

    tokens: int = 0  # generated tokens (EOS included)
    prompt_tokens: int = 0  # tokens prefilled (BOS + prompt + any given prefix), per sequence
    flops: int = 0  # zoo.forward_flops_per_token over every fed token at its context length
    kv_bytes_read: int = 0  # KV cache bytes read, summed over generated tokens
    kv_bytes_peak: int = 0  # largest KV cache of one batch (analytic, per sequence, no padding)
    calls: int = 0  # model forward calls (a batched forward is one)

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.tokens + other.tokens, self.prompt_tokens + other.prompt_tokens, self.flops + other.flops,
                    self.kv_bytes_read + other.kv_bytes_read, max(self.kv_bytes_peak, other.kv_bytes_peak),
                    self.calls + other.calls)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@lru_cache(maxsize=32)
def _cumulative_flops(spec_json: str) -> list[int]:
    """cum[n] = sum_{c=1}^{n} forward_flops_per_token(spec, c), for n up to max_seq_len."""
    from shared import zoo

    spec = ModelSpec.model_validate_json(spec_json)
    cum = [0]
    for c in range(1, spec.max_seq_len + 1):
        cum.append(cum[-1] + zoo.forward_flops_per_token(spec, c))
    return cum


def kv_bytes_per_token(spec: ModelSpec, dtype_bytes: int = 4) -> int:
    """KV cache bytes per token of context as transformers caches it, at the model's dtype."""
    from shared import zoo

    return zoo.kv_cache_bytes_per_token(spec, bytes_per_value=dtype_bytes, layout="transformers")


def sequence_cost(spec: ModelSpec, prompt_len: int, generated: int, dtype_bytes: int = 4) -> Cost:
    """The analytic cost of one sequence (see the module docstring); ``calls`` is left 0."""
    fed = prompt_len + max(generated, 1) - 1
    cum = _cumulative_flops(spec.model_dump_json())
    bpt = kv_bytes_per_token(spec, dtype_bytes)
    read = generated * prompt_len + generated * (generated - 1) // 2
    return Cost(tokens=generated, prompt_tokens=prompt_len, flops=cum[min(fed, len(cum) - 1)] + _flops_beyond(spec, cum, fed),
                kv_bytes_read=bpt * read, kv_bytes_peak=bpt * fed)


def _flops_beyond(spec: ModelSpec, cum: list[int], fed: int) -> int:
    from shared import zoo

    return sum(zoo.forward_flops_per_token(spec, c) for c in range(len(cum), fed + 1))


# ----------------------------------------------------------------------------- policies
@dataclass
class Policy:
    """A trained policy: ``model`` (transformers causal LM), its zoo ``spec``, ``name`` and
    ``params`` (non-embedding parameters)."""

    model: Any
    spec: ModelSpec
    name: str = "policy"
    params: int = 0
    summary: dict = field(default_factory=dict)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype_bytes(self) -> int:
        return next(self.model.parameters()).element_size()


def as_policy(model, spec: ModelSpec, name: str = "policy") -> Policy:
    """Wrap a zoo model (e.g. a freshly built or RL-updated one) as a :class:`Policy`."""
    from shared import zoo

    return Policy(model, spec, name, zoo.param_counts(spec)["non_embedding"])


@dataclass
class Samples:
    """Completions of ``sample``: per problem, n of each."""

    texts: list[list[str]]  # the completion (given prefix + generated text, EOS dropped)
    token_ids: list[list[list[int]]]  # generated ids only (EOS included when generated)
    logprobs: list[list[list[float]]] | None  # per generated token: log p under the model (temperature 1)
    cost: Cost
    seq_costs: list[list[Cost]] = field(default_factory=list)  # per sequence (calls = 0)
    cache_bytes: int = 0  # measured: bytes of the largest real DynamicCache of a batch (with its left padding)

    def subset(self, n: int) -> Samples:
        """The first ``n`` completions of every problem (e.g. best-of-N curves from one sample set);
        the cost is the sum of their sequence costs (``calls``: as the whole set)."""
        if not 1 <= n <= min(len(t) for t in self.texts):
            raise ValueError(f"n: must be in [1, {min(len(t) for t in self.texts)}], got {n}")
        costs = [c for row in self.seq_costs for c in row[:n]]
        total = sum(costs, Cost())
        total.calls = self.cost.calls
        return Samples([t[:n] for t in self.texts], [t[:n] for t in self.token_ids],
                       None if self.logprobs is None else [t[:n] for t in self.logprobs], total,
                       [row[:n] for row in self.seq_costs], self.cache_bytes)


def _generate(policy: Policy, seqs: list[list[int]], *, temperature: float, max_new_tokens: int, stop: set[int],
              seed: int, return_logprobs: bool, batch_size: int):
    """Generate for every sequence until a token of ``stop`` or ``max_new_tokens``.

    Sequences are sorted by length (stable order: deterministic) and run in batches of
    ``batch_size`` with a DynamicCache; a batch of mixed lengths is left-padded, with an
    attention mask and per-row positions (a batch of one length runs unpadded, unmasked). Returns (ids per seq, logprobs per seq or None,
    per-seq Cost, total Cost, largest measured cache bytes)."""
    import torch
    from transformers import DynamicCache

    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0 (0 = greedy), got {temperature}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    model, spec, dev = policy.model, policy.spec, policy.device
    out_ids: list[list[int]] = [[] for _ in seqs]
    out_lp: list[list[float]] | None = [[] for _ in seqs] if return_logprobs else None
    seq_costs: list[Cost] = [Cost() for _ in seqs]
    total, measured = Cost(), 0
    gen = torch.Generator(device=dev).manual_seed(seed)
    stop_t = torch.tensor(sorted(stop), device=dev)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # stable: deterministic batches
    for i in order:
        if len(seqs[i]) >= spec.max_seq_len:
            raise ValueError(f"max_new_tokens: prompt of {len(seqs[i])} tokens leaves no room in max_seq_len={spec.max_seq_len}")
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            lens = [len(seqs[i]) for i in idx]
            T = max(lens)
            budgets = [min(max_new_tokens, spec.max_seq_len - n) for n in lens]
            budget_t = torch.tensor(budgets, device=dev)
            x = torch.tensor([[PAD] * (T - len(seqs[i])) + seqs[i] for i in idx], device=dev)
            mixed = min(lens) < T  # left padding: a mask hides the pads, positions start at each row's first token
            if mixed:
                mask = (torch.arange(T, device=dev)[None, :] >= torch.tensor([T - n for n in lens], device=dev)[:, None]).long()
                pos = (mask.cumsum(1) - 1).clamp(min=0)
                extra = dict(attention_mask=mask, position_ids=pos)
            else:
                extra = {}
            cache = DynamicCache()
            logits = model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=1, **extra).logits[:, -1]
            calls = 1
            alive = torch.ones(len(idx), dtype=torch.bool, device=dev)
            toks, lps = [], []
            for t in range(max(budgets)):
                if temperature == 0:
                    nxt = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits.float() / temperature, -1)
                    nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
                nxt = torch.where(alive, nxt, torch.full_like(nxt, PAD))
                toks.append(nxt)
                if return_logprobs:
                    lps.append(torch.log_softmax(logits.float(), -1).gather(1, nxt[:, None]).squeeze(1))
                alive = alive & ~torch.isin(nxt, stop_t) & (budget_t > t + 1)
                if not bool(alive.any()):
                    break
                if mixed:
                    mask = torch.cat([mask, mask.new_ones(len(idx), 1)], 1)
                    pos = pos[:, -1:] + 1
                    extra = dict(attention_mask=mask, position_ids=pos)
                logits = model(input_ids=nxt[:, None], cache=cache, use_cache=True, **extra).logits[:, -1]
                calls += 1
            measured = max(measured, _cache_bytes(cache))
            ids = torch.stack(toks, 1).tolist()
            lp = torch.stack(lps, 1).tolist() if return_logprobs else None
            peak = 0
            for row, i in enumerate(idx):
                n = _generated_length(ids[row][:budgets[row]], stop)
                out_ids[i] = ids[row][:n]
                if out_lp is not None:
                    out_lp[i] = lp[row][:n]
                seq_costs[i] = sequence_cost(spec, lens[row], n, policy.dtype_bytes)  # padding is not counted
                peak += seq_costs[i].kv_bytes_peak
                total = total + replace(seq_costs[i], kv_bytes_peak=0)
            total = total + Cost(kv_bytes_peak=peak, calls=calls)
    model.train(was_training)
    return out_ids, out_lp, seq_costs, total, measured


def _generated_length(ids: list[int], stop: set[int]) -> int:
    for n, tok in enumerate(ids, 1):
        if tok in stop:
            return n
    return len(ids)


def _cache_bytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if t is not None and hasattr(t, "numel"):
                total += t.numel() * t.element_size()
    return total


def _per_problem(problems, value, name: str) -> list:
    if value is None or isinstance(value, str):
        return [value or ""] * len(problems)
    value = list(value)
    if len(value) != len(problems):
        raise ValueError(f"{name}: needs one entry per problem ({len(problems)}), got {len(value)}")
    return value


def default_max_new_tokens(problems: Sequence[Problem]) -> int:
    """Room for the gold solution of the hardest problem plus two steps of slack."""
    d = max(p.difficulty for p in problems)
    w = max(p.width for p in problems)
    return (d + 2) * (3 * w + 4) + w + 2


def sample(policy: Policy, problems: Sequence[Problem], n: int = 1, temperature: float = 1.0,
           max_new_tokens: int | None = None, seed: int = 0, prefix: str | Sequence[str] | None = None,
           return_logprobs: bool = False, batch_size: int = BATCH_SIZE) -> Samples:
    """``n`` completions per problem, batched and KV-cached; temperature 0 is greedy.

    ``prefix``: a start of the completion to continue from (one string, or one per problem);
    it is prefilled (counted in ``cost.prompt_tokens``) and included in ``texts``. ``logprobs``
    are the model's own log-probabilities (temperature 1) of the generated tokens, for RL.
    The same seed and arguments give the same samples."""
    problems = list(problems)
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    if not problems:
        return Samples([], [], [] if return_logprobs else None, Cost())
    prefixes = _per_problem(problems, prefix, "prefix")
    max_new = max_new_tokens or default_max_new_tokens(problems)
    seqs = [prompt_ids(p, pre) for p, pre in zip(problems, prefixes) for _ in range(n)]
    ids, lps, seq_costs, total, measured = _generate(policy, seqs, temperature=temperature, max_new_tokens=max_new,
                                                     stop={EOS}, seed=seed, return_logprobs=return_logprobs,
                                                     batch_size=batch_size)
    rows = lambda xs: [xs[i * n:(i + 1) * n] for i in range(len(problems))]  # noqa: E731
    texts = [prefixes[i // n] + decode(t) for i, t in enumerate(ids)]
    return Samples(rows(texts), rows(ids), rows(lps) if lps is not None else None, total, rows(seq_costs), measured)


@dataclass
class Steps:
    """Next steps of ``extend``: per prefix, n step texts (with their ';' when they end one)."""

    texts: list[list[str]]
    done: list[list[bool]]  # the step did not end with ';' (an answer + EOS, or out of tokens)
    cost: Cost


def extend(policy: Policy, problems: Problem | Sequence[Problem], prefixes: Sequence[str], n: int = 1,
           temperature: float = 1.0, seed: int = 0, max_step_tokens: int | None = None,
           batch_size: int = BATCH_SIZE) -> Steps:
    """Sample ONE next step, ``n`` times, for every partial completion in ``prefixes``.

    ``problems``: the problem all prefixes share, or one per prefix. Each step stops at ';'
    (kept in the text) or EOS (dropped; the step is then ``done``: the answer was written).
    Each prefix is prefilled anew (no prefix sharing between calls: a tree search that
    shares its KV cache accounts for that itself from the returned token counts)."""
    prefixes = list(prefixes)
    probs = [problems] * len(prefixes) if isinstance(problems, Problem) else list(problems)
    if len(probs) != len(prefixes):
        raise ValueError(f"problems: needs one problem per prefix ({len(prefixes)}) or a single Problem, got {len(probs)}")
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    if not prefixes:
        return Steps([], [], Cost())
    max_step = max_step_tokens or 3 * max(p.width for p in probs) + 5
    seqs = [prompt_ids(p, pre) for p, pre in zip(probs, prefixes) for _ in range(n)]
    ids, _, _, total, _ = _generate(policy, seqs, temperature=temperature, max_new_tokens=max_step,
                                    stop={EOS, _ID[STEP_END]}, seed=seed, return_logprobs=False, batch_size=batch_size)
    texts = [decode(t) for t in ids]
    done = [not t.endswith(STEP_END) for t in texts]
    return Steps([texts[i * n:(i + 1) * n] for i in range(len(prefixes))],
                 [done[i * n:(i + 1) * n] for i in range(len(prefixes))], total)


# ----------------------------------------------------------------------------- verifiers
class OracleVerifier:
    """The exact checker behind the verifier interface: step scores are 0/1 from
    :func:`step_correct`; the score of a completion with an answer is :func:`check` alone (an
    oracle outcome reward), of a partial one the min of its step scores."""

    flops_per_call = 0

    def score_steps(self, problem: Problem, completion: str) -> list[float]:
        return [float(ok) for ok in step_correct(problem, completion)]

    def score(self, problem: Problem, completion: str) -> float:
        return float(check(problem, completion))

    def score_many(self, problems: Sequence[Problem], completions: Sequence[str]) -> tuple[list[list[float]], list[float]]:
        """(step scores, outcome-or-partial score) per completion; see :meth:`Verifier.score_many`."""
        steps = [self.score_steps(p, c) for p, c in zip(problems, completions)]
        return steps, [float(check(p, c)) if answer_of(c) is not None else _aggregate(s, None, c)
                       for p, c, s in zip(problems, completions, steps)]

    def score_rows(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[tuple[list[float], float | None]]:
        """Per completion (0/1 step scores, 0/1 outcome or None without an answer); see :meth:`Verifier.score_rows`."""
        problems, completions = _paired(problems, completions)
        return [(self.score_steps(p, c), float(check(p, c)) if answer_of(c) is not None else None)
                for p, c in zip(problems, completions)]

    _run = score_rows


def _paired(problems: Sequence[Problem], completions: Sequence[str]) -> tuple[list[Problem], list[str]]:
    problems, completions = list(problems), list(completions)
    if len(problems) != len(completions):
        raise ValueError(f"completions: needs one per problem ({len(problems)}), got {len(completions)}")
    return problems, completions


def _aggregate(step_scores: list[float], outcome: float | None, completion: str) -> float:
    """One score of a (partial) completion: the min over its step scores and, once it has an
    answer, the answer's score. Without an answer only a prefix of whole steps (ending in ';',
    what beam search scores) gets its steps' min; anything else ("", a ramble cut off, a
    malformed ending) scores 0: it has no answer, so best-of-N must never prefer it."""
    if outcome is None and not (step_scores and completion.endswith(STEP_END)):
        return 0.0
    return min(step_scores + ([outcome] if outcome is not None else []))


def _label_positions(problem: Problem, completion: str) -> tuple[list[int], int | None]:
    """Token positions (in BOS + prompt + completion) of every step's ';' and the answer's last digit."""
    base = 1 + len(problem.prompt)
    body_end = completion.find(ANSWER)
    body = completion if body_end < 0 else completion[:body_end]
    steps = [base + i for i, ch in enumerate(body) if ch == STEP_END]
    answer = base + len(completion) - 1 if answer_of(completion) is not None else None
    return steps, answer


class PRMNet:
    """Factory of the PRM module: a zoo causal LM's backbone + a linear head, one logit per
    position. ``window`` > 0 also feeds the head, at position t, the LM's log-probability of
    each of the ``window`` tokens ending at t and their min (its "surprise": a written slip is a
    token a task-trained LM did not expect), so a step's local check is one feature away."""

    @staticmethod
    def build(spec: ModelSpec, seed: int, window: int = 0):
        import torch
        from torch import nn

        from shared import zoo

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lm = zoo.build(spec, seed=seed)
                self.window = window
                with zoo._torch_seed(seed + 1):
                    self.head = nn.Linear(spec.d_model + (window + 1 if window else 0), 1)

            def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
                hidden = self.lm.model(input_ids=input_ids).last_hidden_state
                if not self.window:
                    return self.head(hidden).squeeze(-1)
                logp = torch.log_softmax(self.lm.lm_head(hidden[:, :-1]).float(), -1)
                tok = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # log P(token t | before it), t >= 1
                tok = nn.functional.pad(tok, (1 + self.window - 1, 0))  # BOS and the window's start: 0
                feats = tok.unfold(-1, self.window, 1)  # (B, T, window): the surprises ending at t
                feats = torch.cat([feats, feats.min(-1, keepdim=True).values], -1)  # + the largest surprise
                return self.head(torch.cat([hidden, feats.to(hidden.dtype)], -1)).squeeze(-1)

        return Net()


class Verifier:
    """A trained process reward model: ``score_steps`` = P(step correct) at every step,
    ``score`` = min of those and P(answer correct) (once there is an answer)."""

    def __init__(self, net, spec: ModelSpec, summary: dict | None = None, batch_size: int = BATCH_SIZE):
        self.net, self.spec, self.summary, self.batch_size = net, spec, summary or {}, batch_size

    @property
    def device(self):
        return next(self.net.parameters()).device

    def score_steps(self, problem: Problem, completion: str) -> list[float]:
        return self.score_many([problem], [completion])[0][0]

    def score(self, problem: Problem, completion: str) -> float:
        return self.score_many([problem], [completion])[1][0]

    def outcome(self, problem: Problem, completion: str) -> float | None:
        """P(answer correct) alone (an outcome verifier), or None without an answer."""
        return self.score_rows([problem], [completion])[0][1]

    def score_many(self, problems: Sequence[Problem], completions: Sequence[str]) -> tuple[list[list[float]], list[float]]:
        """Batched: (per completion its step scores, its aggregate score)."""
        rows = self.score_rows(problems, completions)
        return [s for s, _ in rows], [_aggregate(s, o, c) for (s, o), c in zip(rows, completions)]

    def flops(self, problems: Sequence[Problem], completions: Sequence[str]) -> int:
        """Analytic FLOPs of scoring these completions (one full forward each)."""
        cum = _cumulative_flops(self.spec.model_dump_json())
        return sum(cum[min(1 + len(p.prompt) + len(c), len(cum) - 1)] for p, c in zip(problems, completions))

    def score_rows(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[tuple[list[float], float | None]]:
        """Batched, the raw PRM outputs per completion: (P(step correct) at every written step,
        P(answer correct) or None without an answer). :meth:`score_many` aggregates these."""
        import torch

        problems, completions = _paired(problems, completions)
        seqs = [prompt_ids(p, c)[: self.spec.max_seq_len] for p, c in zip(problems, completions)]
        out: list[tuple[list[float], float | None]] = [([], None)] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        self.net.eval()
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b:b + self.batch_size]
                T = max(len(seqs[i]) for i in idx)
                x = torch.tensor([seqs[i] + [PAD] * (T - len(seqs[i])) for i in idx], device=self.device)
                probs = torch.sigmoid(self.net(x).float()).tolist()  # right padding: causal, real positions unaffected
                for row, i in enumerate(idx):
                    steps, ans = _label_positions(problems[i], completions[i])
                    steps = list(itertools.accumulate((probs[row][j] for j in steps if j < T), min))  # P(no error yet)
                    out[i] = (steps, probs[row][ans] if ans is not None and ans < T else None)
        return out

    _run = score_rows  # the earlier private name, kept for callers


# ----------------------------------------------------------------------------- test-time procedures
@dataclass
class SearchResult:
    answers: list[int | None]
    correct: list[bool]
    cost: Cost
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else float("nan")


def _result(problems: Sequence[Problem], texts: list[str], cost: Cost, **extra) -> SearchResult:
    answers = [answer_of(t) for t in texts]
    return SearchResult(answers, [a == p.answer for a, p in zip(answers, problems)], cost, dict(texts=texts, **extra))


def _samples(policy, problems, n, samples, temperature, seed, max_new_tokens) -> Samples:
    if samples is None:
        return sample(policy, problems, n, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens)
    if len(samples.texts) != len(problems):
        raise ValueError(f"samples: has {len(samples.texts)} problems, problems has {len(problems)}")
    return samples.subset(n)


def best_of_n(policy: Policy, problems: Sequence[Problem], n: int, verifier, temperature: float = 1.0, seed: int = 0,
              samples: Samples | None = None, weighted: bool = False, max_new_tokens: int | None = None) -> SearchResult:
    """Sample ``n`` completions per problem, answer with the one the verifier scores highest
    (``weighted``: the answer with the largest summed score, weighted majority voting).
    ``samples``: reuse a larger sample set (its first n per problem) instead of sampling."""
    problems = list(problems)
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    s = _samples(policy, problems, n, samples, temperature, seed, max_new_tokens)
    flat_p = [p for p, row in zip(problems, s.texts) for _ in row]
    flat_t = [t for row in s.texts for t in row]
    _, scores = verifier.score_many(flat_p, flat_t)
    scores = [sc if answer_of(t) is not None else 0.0 for sc, t in zip(scores, flat_t)]  # no answer: never chosen
    chosen, k = [], 0
    for row in s.texts:
        sc = scores[k:k + len(row)]
        k += len(row)
        if weighted:
            votes: dict[int, float] = {}
            for t, v in zip(row, sc):
                if answer_of(t) is not None:
                    votes[answer_of(t)] = votes.get(answer_of(t), 0.0) + v
            best = max(votes, key=lambda a: (votes[a], -a)) if votes else None
            chosen.append(next((t for t in row if answer_of(t) == best), row[0]))
        else:
            chosen.append(row[max(range(len(row)), key=lambda j: (sc[j], -j))])
    vflops = getattr(verifier, "flops", None)
    return _result(problems, chosen, s.cost, scores=scores,
                   verifier_flops=vflops(flat_p, flat_t) if callable(vflops) else 0)


def majority_vote(policy: Policy, problems: Sequence[Problem], n: int, temperature: float = 1.0, seed: int = 0,
                  samples: Samples | None = None, max_new_tokens: int | None = None) -> SearchResult:
    """Sample ``n`` completions per problem, answer with the most frequent answer (ties: the
    one seen first; completions without an answer do not vote)."""
    problems = list(problems)
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    s = _samples(policy, problems, n, samples, temperature, seed, max_new_tokens)
    chosen, agreement = [], []
    for row in s.texts:
        counts = Counter(a for a in map(answer_of, row) if a is not None)
        if counts:
            top = max(counts.values())
            best = next(a for a in map(answer_of, row) if a is not None and counts[a] == top)
            chosen.append(next(t for t in row if answer_of(t) == best))
            agreement.append(top / len(row))
        else:
            chosen.append(row[0])
            agreement.append(0.0)
    return _result(problems, chosen, s.cost, agreement=agreement)


def revise(policy: Policy, problems: Sequence[Problem], rounds: int, verifier=None, threshold: float = 0.5,
           temperature: float = 1.0, seed: int = 0, max_new_tokens: int | None = None) -> SearchResult:
    """Sequential revision: one attempt, then up to ``rounds`` revisions of every attempt the
    verifier doubts (score < ``threshold``): keep the steps before the first doubtful one
    (step score < threshold) and re-sample the rest conditioned on that prefix. An attempt
    the verifier trusts stops early. ``extra``: rounds used per problem, every attempt."""
    problems = list(problems)
    if rounds < 0:
        raise ValueError(f"rounds: must be >= 0, got {rounds}")
    if verifier is None:
        raise ValueError("verifier: revise needs a verifier (Verifier or OracleVerifier) to find doubtful steps")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold: must be in (0, 1], got {threshold}")
    first = sample(policy, problems, 1, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens)
    texts = [row[0] for row in first.texts]
    cost, used = first.cost, [0] * len(problems)
    history = [[t] for t in texts]
    vflops = 0
    for r in range(1, rounds + 1):
        step_scores, scores = verifier.score_many(problems, texts)
        if callable(getattr(verifier, "flops", None)):
            vflops += verifier.flops(problems, texts)
        todo = [i for i, sc in enumerate(scores) if sc < threshold]
        if not todo:
            break
        prefixes = []
        for i in todo:
            steps = split_steps(texts[i])
            bad = next((j for j, v in enumerate(step_scores[i]) if v < threshold), len(step_scores[i]))
            prefixes.append("".join(s + STEP_END for s in steps[:bad]))
        again = sample(policy, [problems[i] for i in todo], 1, temperature=temperature, seed=seed + r,
                       prefix=prefixes, max_new_tokens=max_new_tokens)
        cost = cost + again.cost
        for i, row in zip(todo, again.texts):
            texts[i] = row[0]
            used[i] = r
            history[i].append(row[0])
    return _result(problems, texts, cost, rounds_used=used, attempts=history, verifier_flops=vflops)


def beam_search(policy: Policy, problems: Sequence[Problem], width: int, verifier, beams: int | None = None,
                temperature: float = 1.0, seed: int = 0, max_steps: int | None = None,
                max_step_tokens: int | None = None) -> SearchResult:
    """Step-level beam search scored by a (process) verifier.

    Every problem starts from the empty completion; the root gets ``width`` sampled first
    steps. At every step the ``beams`` best candidates (default round(sqrt(width)); score:
    min over the PRM's step scores, and the answer's score for finished ones) are kept; each
    unfinished kept beam gets ``width // beams`` sampled next steps, a finished kept one
    leaves the search. The answer is the best finished candidate. Width 1 at temperature 0
    is greedy decoding, step by step."""
    problems = list(problems)
    if width < 1:
        raise ValueError(f"width: must be >= 1, got {width}")
    beams = beams or max(1, round(math.sqrt(width)))
    if not 1 <= beams <= width:
        raise ValueError(f"beams: must be in [1, width={width}], got {beams}")
    per = max(1, width // beams)
    max_steps = max_steps or max(p.difficulty for p in problems) + 2
    active = [[""] for _ in problems]  # per problem: unfinished prefixes
    finished: list[list[tuple[float, str]]] = [[] for _ in problems]
    cost, vflops = Cost(), 0
    for step in range(max_steps + 1):
        todo = [(i, pre) for i, row in enumerate(active) for pre in row]
        if not todo:
            break
        n = width if step == 0 else per
        last = step == max_steps  # out of steps: what is written now is final
        ext = extend(policy, [problems[i] for i, _ in todo], [pre for _, pre in todo], n=n,
                     temperature=temperature, seed=seed + step, max_step_tokens=max_step_tokens)
        cost = cost + ext.cost
        cands: list[list[tuple[str, bool]]] = [[] for _ in problems]
        for (i, pre), texts, dones in zip(todo, ext.texts, ext.done):
            cands[i].extend((pre + t, d or last) for t, d in zip(texts, dones))
        flat = [(i, t, d) for i, row in enumerate(cands) for t, d in row]
        _, scores = verifier.score_many([problems[i] for i, _, _ in flat], [t for _, t, _ in flat])
        if callable(getattr(verifier, "flops", None)):
            vflops += verifier.flops([problems[i] for i, _, _ in flat], [t for _, t, _ in flat])
        by_problem: list[list[tuple[float, int, str, bool]]] = [[] for _ in problems]
        for k, ((i, t, d), sc) in enumerate(zip(flat, scores)):
            by_problem[i].append((sc, -k, t, d))
        for i, row in enumerate(by_problem):
            keep = sorted(row, reverse=True)[:beams]
            active[i] = [t for _, _, t, d in keep if not d]
            finished[i].extend((sc, t) for sc, _, t, d in keep if d)
    texts = [max(row, key=lambda st: st[0])[1] if row else "" for row in finished]
    return _result(problems, texts, cost, verifier_flops=vflops, finished=[len(row) for row in finished])


# ----------------------------------------------------------------------------- the artifact
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]  # a folder name
TASK_FILE = "task.json"


class Spec(ModelSpec):
    """A zoo.ModelSpec whose vocabulary and context default to the task's."""

    vocab_size: int = Field(0, ge=0, description="0: VOCAB_SIZE; else >= it")
    max_seq_len: int = Field(0, ge=0, description="0: room for the hardest training problem + 2 steps")


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    modulus: int = Field(MODULUS, ge=2, le=9973, description="arithmetic modulo this number")
    ops: str = Field(OPS, min_length=1, description="operations drawn per step, a subset of '+-*'")
    train_difficulty: tuple[int, int] = Field((1, 6), description="(lo, hi) steps of the SFT and PRM problems")
    eval_difficulty: int = Field(4, ge=1, description="steps of the held-out problems the summary's pass rates use")

    @model_validator(mode="after")
    def _check(self) -> TaskParams:
        if set(self.ops) - set(OPS):
            raise ValueError(f"ops: must be a subset of {OPS!r}, got {self.ops!r}")
        lo, hi = self.train_difficulty
        if not 1 <= lo <= hi:
            raise ValueError(f"train_difficulty: needs 1 <= lo <= hi, got {self.train_difficulty}")
        return self

    def generate(self, n: int, difficulty: int | Sequence[int] | None = None, seed: int = 0) -> list[Problem]:
        """Problems of this task (difficulty: default the eval difficulty)."""
        return generate(n, self.eval_difficulty if difficulty is None else difficulty, seed, self.modulus, self.ops)

    @property
    def max_len(self) -> int:
        return sequence_length(self.train_difficulty[1] + 2, self.modulus)


class PRMParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Spec = Field(description="the PRM backbone (zoo.ModelSpec fields)")
    train: TrainConfig = Field(description="its training run (seq_len: >= the task's longest sequence)")
    problems: int = Field(gt=0, description="training problems; every policy samples `samples` completions of each")
    samples: int = Field(gt=0, description="completions per problem and policy")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the training completions")
    eval_problems: int = Field(gt=0, description="held-out problems for the PRM's accuracy and AUROC")
    init_from: str = Field("", description="a policy name: start the backbone from its weights (model must be its "
                                           "architecture); '': a fresh backbone")
    labels: Literal["gold", "valid"] = Field("gold", description="step labels: 'gold' (step_correct) or 'valid' "
                                                                 "(step_valid, the local check; the answer keeps check)")
    window: int = Field(0, ge=0, le=64, description="surprise features: the LM's log-probabilities of the last `window` "
                                                    "tokens at every position (0: hidden state only)")
    freeze_backbone: bool = Field(False, description="train the head only (the backbone stays the init_from policy)")


class EvalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    problems: int = Field(gt=0, description="held-out problems at task.eval_difficulty per policy")
    samples: int = Field(gt=0, description="samples per problem at temperature 1 (pass@1 sampled, pass@k)")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cpu", "cuda", "auto"] = Field(description="where to train and sample (auto: cuda if present)")
    num_threads: int = Field(ge=0, description="torch CPU threads while building; 0: torch's default")
    task: TaskParams = Field(description="the arithmetic-chain task")
    policies: dict[ModelName, Spec] = Field(min_length=1, description="name -> policy architecture (zoo.ModelSpec fields)")
    sft: TrainConfig = Field(description="supervised warm-up of every policy (seq_len: >= the longest sequence)")
    error_rate: float = Field(ge=0, lt=1, description="share of SFT steps with a corrupted result (diverse, imperfect policies)")
    prm: PRMParams = Field(description="the process reward model")
    eval: EvalParams = Field(description="held-out pass rates written to the summary")

    @model_validator(mode="after")
    def _fits(self) -> Params:
        need = sequence_length(self.task.train_difficulty[1], self.task.modulus) - 1
        for key, cfg in (("sft", self.sft), ("prm.train", self.prm.train)):
            if cfg.seq_len < need:
                raise ValueError(f"{key}.seq_len: must be >= {need} (the longest training sequence), got {cfg.seq_len}")
        if self.prm.init_from:
            if self.prm.init_from not in self.policies:
                raise ValueError(f"prm.init_from: must name a policy ({', '.join(self.policies)}) or be '', "
                                 f"got {self.prm.init_from!r}")
            if self.prm.model != self.policies[self.prm.init_from]:
                raise ValueError(f"prm.model: must equal policies.{self.prm.init_from} (prm.init_from), got {self.prm.model}")
        return self


def resolve_spec(entry: Spec, task: TaskParams) -> ModelSpec:
    """The full zoo.ModelSpec of a params entry (vocab_size and max_seq_len filled in)."""
    if entry.vocab_size and entry.vocab_size < VOCAB_SIZE:
        raise ValueError(f"vocab_size: must be >= VOCAB_SIZE={VOCAB_SIZE} (or 0), got {entry.vocab_size}")
    fields = entry.model_dump(exclude_unset=True) | {"vocab_size": entry.vocab_size or VOCAB_SIZE,
                                                      "max_seq_len": entry.max_seq_len or task.max_len}
    return ModelSpec.model_validate(fields)


def noisy_solution(problem: Problem, rng: random.Random, error_rate: float) -> str:
    """A solution whose steps each get a wrong result with probability ``error_rate`` (the
    chain then carries on from the wrong value, as a real slip would)."""
    w, m = problem.width, problem.modulus
    value, text = problem.start, []
    for k, (op, x) in enumerate(problem.ops):
        new = _apply(value, op, x, m)
        if m > 1 and rng.random() < error_rate:
            new = (new + rng.randrange(1, m)) % m
        text.append(f"{LABELS[k]}{value:0{w}d}{op}{x:0{w}d}={new:0{w}d}{STEP_END}")
        value = new
    return "".join(text) + f"{ANSWER}{value:0{w}d}"


def sft_batch(task: TaskParams, cfg: TrainConfig, step: int, seed: int, error_rate: float = 0.0):
    """(x, y) of SFT step ``step``: BOS + prompt + solution + EOS, right-padded; targets on the
    solution and EOS only (-100 elsewhere). A pure function of (task, cfg, step, seed)."""
    import torch

    rng = random.Random(f"sft/{seed}/{step}")
    problems = generate(cfg.batch_size, task.train_difficulty, rng.randrange(2**31), task.modulus, task.ops)
    x = torch.full((cfg.batch_size, cfg.seq_len), PAD, dtype=torch.long)
    y = torch.full((cfg.batch_size, cfg.seq_len), -100, dtype=torch.long)
    for r, p in enumerate(problems):
        seq = prompt_ids(p, noisy_solution(p, rng, error_rate)) + [EOS]
        P = 1 + len(p.prompt)
        x[r, : len(seq) - 1] = torch.tensor(seq[:-1])
        y[r, P - 1: len(seq) - 1] = torch.tensor(seq[P:])
    return x, y


def train_policy(spec: ModelSpec, task: TaskParams, cfg: TrainConfig, *, error_rate: float = 0.0, seed: int = 0,
                 device: str = "cpu", out_dir: Path | None = None, progress=None, name: str = "policy") -> Policy:
    """A zoo model of ``spec`` after supervised warm-up on the task's solutions."""
    from shared import trainer, zoo

    model = zoo.build(spec, seed=seed)
    result = trainer.train(model, lambda s: sft_batch(task, cfg, s, seed, error_rate), cfg, device=device,
                           out_dir=out_dir, progress=progress, seed=seed, desc=f"sft {name}")
    policy = as_policy(model, spec, name)
    policy.summary = {"train_seconds": round(result.train_seconds, 3), "tokens": result.tokens_seen,
                      "final_train_loss": float(result.history["train_loss"].tail(max(1, cfg.steps // 10)).mean())}
    return policy


def evaluate_policy(policy: Policy, problems: Sequence[Problem], samples: int, seed: int = 0) -> dict[str, float]:
    """Greedy accuracy, mean sampled accuracy (temperature 1), pass@k and step accuracy."""
    greedy = sample(policy, problems, 1, temperature=0)
    drawn = sample(policy, problems, samples, temperature=1.0, seed=seed)
    ok = [[check(p, t) for t in row] for p, row in zip(problems, drawn.texts)]
    steps = [v for p, row in zip(problems, drawn.texts) for t in row for v in step_correct(p, t)]
    return {"greedy_accuracy": sum(check(p, r[0]) for p, r in zip(problems, greedy.texts)) / len(problems),
            "sampled_accuracy": sum(map(sum, ok)) / (len(problems) * samples),
            f"pass@{samples}": sum(map(any, ok)) / len(problems),
            "sampled_step_accuracy": sum(steps) / max(1, len(steps)),
            "tokens_per_sample": drawn.cost.tokens / (len(problems) * samples)}


def prm_data(policies: Sequence[Policy], problems: Sequence[Problem], samples: int, temperature: float, seed: int,
             seq_len: int, labels: str = "gold"):
    """(x, labels) of the PRM: every policy's samples; label 1/0 at each step's ';' (``labels``
    "gold": :func:`step_correct`; "valid": :func:`step_valid`, the local check) and at the
    answer's last digit (:func:`check`), -1 elsewhere."""
    import torch

    if labels not in ("gold", "valid"):
        raise ValueError(f"labels: must be 'gold' or 'valid', got {labels!r}")
    step_label = step_correct if labels == "gold" else step_valid
    rows = []
    for k, pol in enumerate(policies):
        drawn = sample(pol, problems, samples, temperature=temperature, seed=seed + k)
        rows += [(p, t) for p, row in zip(problems, drawn.texts) for t in row]
    x = torch.full((len(rows), seq_len), PAD, dtype=torch.long)
    y = torch.full((len(rows), seq_len), -1.0)
    for r, (p, t) in enumerate(rows):
        seq = prompt_ids(p, t)[:seq_len]
        x[r, : len(seq)] = torch.tensor(seq)
        steps, ans = _label_positions(p, t)
        for pos, ok in zip(steps, step_label(p, t)):
            if pos < seq_len:
                y[r, pos] = float(ok)
        if ans is not None and ans < seq_len:
            y[r, ans] = float(check(p, t))
    return x, y


def _prm_loss(model, x, y):
    import torch.nn.functional as F

    logits = model(input_ids=x)
    mask = y >= 0
    if not bool(mask.any()):  # a batch of completions without a single step or answer: nothing to learn
        return logits.float().sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask].float(), y[mask])


def train_prm(policies: Sequence[Policy], task: TaskParams, cfg: PRMParams, *, seed: int = 0, device: str = "cpu",
              out_dir: Path | None = None, progress=None) -> Verifier:
    """Train the PRM on the policies' own samples, evaluate it on held-out samples."""
    import torch

    from shared import trainer

    spec = resolve_spec(cfg.model, task)
    problems = task.generate(cfg.problems, task.train_difficulty, seed=seed + 1000)
    x, y = prm_data(policies, problems, cfg.samples, cfg.temperature, seed, cfg.train.seq_len, labels=cfg.labels)

    def batch(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(x), (cfg.train.batch_size,), generator=g)
        return x[idx], y[idx]

    net = PRMNet.build(spec, seed, cfg.window)
    if cfg.init_from:  # a PRM starts from a policy that already reads the task (the usual practice)
        source = next((p for p in policies if p.name == cfg.init_from), None)
        if source is None:
            raise ValueError(f"prm.init_from: no policy named {cfg.init_from!r} among {[p.name for p in policies]}")
        net.lm.load_state_dict(source.model.state_dict())
    if cfg.freeze_backbone:
        net.lm.requires_grad_(False)
    result = trainer.train(net, batch, cfg.train, device=device, out_dir=out_dir, progress=progress, seed=seed,
                           loss_fn=_prm_loss, desc="prm")
    verifier = Verifier(net, spec)
    held = task.generate(cfg.eval_problems, task.train_difficulty, seed=seed + 2000)
    verifier.summary = {"train_seconds": round(result.train_seconds, 3), "train_examples": len(x),
                        "labels": cfg.labels, "window": cfg.window, "freeze_backbone": cfg.freeze_backbone,
                        "positive_step_share": float((y == 1).sum() / (y >= 0).sum()),
                        **evaluate_verifier(verifier, policies, held, cfg.samples, seed + 3000)}
    return verifier


def evaluate_verifier(verifier, policies: Sequence[Policy], problems: Sequence[Problem], samples: int, seed: int):
    """Step accuracy (0.5 threshold), step AUROC and outcome AUROC on fresh policy samples."""
    from sklearn.metrics import roc_auc_score

    step_y, step_s, out_y, out_s = [], [], [], []
    for k, pol in enumerate(policies):
        drawn = sample(pol, problems, samples, temperature=1.0, seed=seed + k)
        flat_p = [p for p, row in zip(problems, drawn.texts) for _ in row]
        flat_t = [t for row in drawn.texts for t in row]
        steps, scores = verifier.score_many(flat_p, flat_t)
        for p, t, s, sc in zip(flat_p, flat_t, steps, scores):
            step_y += step_correct(p, t)[: len(s)]
            step_s += s
            out_y.append(check(p, t))
            out_s.append(sc)

    def auc(labels, scores):
        return float(roc_auc_score(labels, scores)) if 0 < sum(labels) < len(labels) else None  # JSON: no NaN

    return {"step_accuracy": sum((s >= 0.5) == yv for s, yv in zip(step_s, step_y)) / max(1, len(step_y)),
            "step_auroc": auc(step_y, step_s), "outcome_auroc": auc(out_y, out_s), "eval_steps": len(step_y)}


def build(params: Params, out: Path, inputs: dict[str, Path], seed: int, progress=None) -> dict[str, Any]:
    """Train every policy into ``out/policies/<name>/`` and the PRM into ``out/prm/`` (resumable:
    folders with a summary.json are kept); write ``out/task.json``; return the summaries."""
    import torch

    from shared import device as devices
    from shared import zoo
    from shared.timing import pinned_threads

    out = Path(out)
    dev = devices.resolve(params.device)
    task = params.task
    specs = {name: resolve_spec(entry, task) for name, entry in params.policies.items()}  # fail early
    held = task.generate(params.eval.problems, seed=seed + 500)
    policies, summaries = {}, {}
    with pinned_threads(params.num_threads or None):
        for name, spec in specs.items():
            folder = out / "policies" / name
            if (folder / SUMMARY).exists():
                policies[name] = _load_policy(folder, name, dev)
            else:
                pol = train_policy(spec, task, params.sft, error_rate=params.error_rate, seed=seed, device=dev,
                                   out_dir=folder, progress=progress, name=name)
                pol.summary |= {"params": pol.params, "total_params": sum(p.numel() for p in pol.model.parameters()),
                                "difficulty": task.eval_difficulty, **evaluate_policy(pol, held, params.eval.samples, seed)}
                zoo.save(pol.model, spec, folder)
                (folder / "checkpoint.pt").unlink(missing_ok=True)
                write_text_atomic(folder / SUMMARY, json.dumps(pol.summary, indent=2, sort_keys=True) + "\n")
                policies[name] = pol
            summaries[name] = json.loads((folder / SUMMARY).read_text())
        folder = out / "prm"
        if not (folder / SUMMARY).exists():
            ver = train_prm(list(policies.values()), task, params.prm, seed=seed, device=dev, out_dir=folder,
                            progress=progress)
            zoo.save(ver.net.lm, ver.spec, folder)
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in ver.net.head.state_dict().items()}, folder / HEAD_FILE)
            (folder / "checkpoint.pt").unlink(missing_ok=True)
            write_text_atomic(folder / SUMMARY, json.dumps(ver.summary, indent=2, sort_keys=True) + "\n")
        prm_summary = json.loads((folder / SUMMARY).read_text())
    (out / TASK_FILE).write_text(json.dumps({"task": task.model_dump(), "policies": list(specs)}, indent=2) + "\n")
    if dev == "cuda":
        torch.cuda.empty_cache()
    return {"device": dev, "policies": summaries, "prm": prm_summary}


def _load_policy(folder: Path, name: str, device: str) -> Policy:
    from shared import zoo

    model, spec = zoo.load(folder, device=device)
    model.eval()
    pol = as_policy(model, spec, name)
    if (folder / SUMMARY).exists():
        pol.summary = json.loads((folder / SUMMARY).read_text())
    return pol


def load_task(folder: str | Path) -> TaskParams:
    """The task the artifact was built for (generate problems with ``task.generate``)."""
    return TaskParams.model_validate(json.loads((Path(folder) / TASK_FILE).read_text())["task"])


def load_policies(folder: str | Path, device: str = "cpu") -> dict[str, Policy]:
    """name -> Policy of the artifact's policies, in the params' order (smallest first by convention)."""
    folder = Path(folder)
    return {name: _load_policy(folder / "policies" / name, name, device) for name in _policy_names(folder)}


def _policy_names(folder: Path) -> list[str]:
    if not (folder / TASK_FILE).exists():
        raise FileNotFoundError(f"folder: {folder / TASK_FILE} missing; not a built 'reasoning' artifact")
    return json.loads((folder / TASK_FILE).read_text())["policies"]


def load_policy(folder: str | Path, name: str, device: str = "cpu") -> Policy:
    """One of the artifact's policies by name (one-line error naming the key and the names there)."""
    folder = Path(folder)
    names = _policy_names(folder)
    if name not in names:
        raise ValueError(f"policy: {name!r} is not in the artifact (it has {', '.join(names)})")
    return _load_policy(folder / "policies" / name, name, device)


def load_prm(folder: str | Path, device: str = "cpu") -> Verifier:
    """The artifact's trained process reward model."""
    from safetensors.torch import load_file

    from shared import zoo

    folder = Path(folder) / "prm"
    if not (folder / HEAD_FILE).exists():
        raise FileNotFoundError(f"folder: {folder / HEAD_FILE} missing; not a built 'reasoning' artifact")
    spec = ModelSpec.model_validate_json((folder / zoo.SPEC_FILE).read_text())
    head = load_file(folder / HEAD_FILE)
    extra = head["weight"].shape[1] - spec.d_model  # window + 1 surprise features, or 0
    net = PRMNet.build(spec, 0, window=max(0, extra - 1))
    lm, _ = zoo.load(folder, device=device)
    net.lm = lm
    net.head.load_state_dict(head)
    net.to(device).eval()
    summary = json.loads((folder / SUMMARY).read_text()) if (folder / SUMMARY).exists() else {}
    return Verifier(net, spec, summary)
