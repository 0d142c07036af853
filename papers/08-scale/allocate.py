"""SCALE (selective resource allocation) on the reasoning substrate's arithmetic chains.

SCALE's four stages (Xiao et al., AAAI'26; ``inference/cot_dual_thinking.py`` of
XiaoYang66/DualThinking) map onto the shared task (``shared.reasoning``) as:

1. **decomposition**: a problem's sub-problems are its own steps (one operation each), so the
   outline is given, not generated (the paper takes the best of 8 generated outlines);
2. **difficulty assessment** of every step in its context, from the policy's OWN signal, never
   the gold answer: the policy decodes the step greedily (that decode is the assessment, its
   tokens are charged) and a :class:`Scorer` maps the decode's token entropies (and the step's
   visible context: operation, position) to a score in [0, 1], fitted on held-out problems;
3. **mode selection**: System 2 when the score exceeds the threshold ``tau`` (the paper's
   default 0.5), else System 1;
4. **sequential execution with context propagation**: step j is solved after the steps chosen
   for 0..j-1, which form its prefix.

System 1 = the greedy step (for SCALE it is the assessment decode itself, so an easy step costs
nothing extra). System 2 = ``k`` sampled steps at ``temperature`` and the one the PRM scores
highest (``select="prm"``) or the most frequent one (``"majority"``). Cost = generated tokens
(EOS included) of everything a method decodes, the assessment included; the PRM's scoring
forwards generate no tokens and are counted separately (``prm_scored``).

All methods run step-synchronously over one :class:`StepTree`, which memoises the greedy step
and the System-2 samples of every (problem, prefix) node: two methods that reach the same
prefix get the same outcome (common random numbers), so SCALE with no System-2 step IS
uniform System 1, random allocation at fraction 1 IS uniform System 2, and the differences
between methods are the allocation's, not sampling noise. Each method is charged the tokens of
the nodes it visits, as if it had run alone.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from shared import reasoning

STEP_ID = reasoning.encode(reasoning.STEP_END)[0]
SIGNALS = ("regressor", "entropy")
SELECTS = ("prm", "majority")


# ----------------------------------------------------------------------------- one step
@dataclass(frozen=True)
class StepOut:
    text: str  # the step's characters (ends with ';' unless done)
    tokens: int  # generated tokens it costs (up to and including the ';' or EOS)
    done: bool  # no ';': the answer was written (EOS) or the step ran out of tokens


def cut_step(ids: Sequence[int]) -> StepOut:
    """The first step of generated ``ids``: up to and including the first ';' or EOS."""
    n = len(ids)
    for pos, tok in enumerate(ids, 1):
        if tok in (STEP_ID, reasoning.EOS):
            n = pos
            break
    text = reasoning.decode(ids[:n])
    return StepOut(text, n, not text.endswith(reasoning.STEP_END))


def step_budget(problems: Sequence[reasoning.Problem]) -> int:
    """Tokens allowed per step (as ``reasoning.extend``): a gold step is 3w + 4, one of slack."""
    return 3 * max(p.width for p in problems) + 5


def step_features(policy: reasoning.Policy, problems: Sequence[reasoning.Problem], prefixes: Sequence[str],
                  texts: Sequence[str], batch_size: int = reasoning.BATCH_SIZE) -> np.ndarray:
    """Per step: (max, mean) token entropy in nats and the min greedy-token log-probability of
    the policy's distribution over the step's tokens, given BOS + prompt + prefix (teacher-forced
    on the decoded step; a decoder has these logits anyway). A step with no characters (EOS at
    once) uses the distribution of its first token."""
    import torch

    rows = [(reasoning.prompt_ids(p, pre), reasoning.encode(t)) for p, pre, t in zip(problems, prefixes, texts)]
    out = np.zeros((len(rows), 3))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    model = policy.model
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            seqs = [rows[i][0] + rows[i][1] for i in idx]
            T = max(len(s) for s in seqs)
            x = torch.tensor([s + [reasoning.PAD] * (T - len(s)) for s in seqs], device=policy.device)
            logp = torch.log_softmax(model(input_ids=x).logits.float(), -1)  # right padding: causal, unaffected
            ent = -(logp.exp() * logp).sum(-1)
            top = logp.max(-1).values
            for row, i in enumerate(idx):
                start, length = len(rows[i][0]) - 1, max(1, len(rows[i][1]))
                e, t = ent[row, start:start + length], top[row, start:start + length]
                out[i] = (float(e.max()), float(e.mean()), float(t.min()))
    model.train(was_training)
    return out


def gold_prefix(problem: reasoning.Problem, j: int) -> str:
    """The gold completion before step ``j``."""
    return "".join(s + reasoning.STEP_END for s in problem.steps[:j])


def step_wrong(problem: reasoning.Problem, prefix: str, step: StepOut) -> bool:
    """Is the step written after ``prefix`` not the gold step (exact, via step_correct)?"""
    j = len(reasoning.split_steps(prefix))
    ok = reasoning.step_correct(problem, prefix + step.text)
    return not (len(ok) > j and ok[j])


# ----------------------------------------------------------------------------- the node store
class StepTree:
    """Memoised step outcomes per node (problem index, prefix): the greedy step with its
    features, and the k System-2 samples with the PRM's and the majority's choice."""

    def __init__(self, policy: reasoning.Policy, problems: Sequence[reasoning.Problem], *, k: int,
                 temperature: float, verifier=None, seed: int = 0, batch_size: int = reasoning.BATCH_SIZE):
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        if temperature <= 0:
            raise ValueError(f"temperature: System 2 samples, must be > 0, got {temperature}")
        self.policy, self.problems, self.k, self.temperature = policy, list(problems), k, temperature
        self.verifier, self.seed, self.batch_size = verifier, seed, batch_size
        self.max_step = step_budget(self.problems)
        self.greedy: dict[tuple[int, str], tuple[StepOut, np.ndarray]] = {}
        self.system2: dict[tuple[int, str], tuple[list[StepOut], dict[str, int]]] = {}
        self.generated = 0  # tokens really decoded (each node once), for the record
        self._calls = 0

    def _draw(self, keys, n: int, temperature: float):
        problems = [self.problems[i] for i, _ in keys]
        s = reasoning.sample(self.policy, problems, n, temperature=temperature, max_new_tokens=self.max_step,
                             seed=self.seed + self._calls, prefix=[pre for _, pre in keys], batch_size=self.batch_size)
        self._calls += 1
        return [[cut_step(ids) for ids in row] for row in s.token_ids]

    def fill_greedy(self, keys) -> None:
        todo = sorted(set(keys) - self.greedy.keys())
        if not todo:
            return
        outs = [row[0] for row in self._draw(todo, 1, 0.0)]
        feats = step_features(self.policy, [self.problems[i] for i, _ in todo], [pre for _, pre in todo],
                              [o.text for o in outs], self.batch_size)
        for key, out, f in zip(todo, outs, feats):
            self.greedy[key] = (out, f)
            self.generated += out.tokens

    def fill_system2(self, keys, select: str) -> None:
        if select not in SELECTS:
            raise ValueError(f"select: must be one of {SELECTS}, got {select!r}")
        todo = sorted(set(keys) - self.system2.keys())
        if todo:
            for key, outs in zip(todo, self._draw(todo, self.k, self.temperature)):
                self.system2[key] = (outs, {"majority": majority(outs)})
                self.generated += sum(o.tokens for o in outs)
        need = [key for key in sorted(set(keys)) if select not in self.system2[key][1]]
        if need:  # only "prm" can be missing
            if self.verifier is None:
                raise ValueError("verifier: select='prm' needs the PRM")
            flat = [(key, pre + o.text) for key in need for pre in [key[1]] for o in self.system2[key][0]]
            scores = new_step_scores(self.verifier, [self.problems[key[0]] for key, _ in flat], [c for _, c in flat],
                                     [key[1] for key, _ in flat])
            for n, key in enumerate(need):
                sc = scores[n * self.k:(n + 1) * self.k]
                self.system2[key][1]["prm"] = max(range(len(sc)), key=lambda j: (sc[j], -j))

    def chosen(self, key, select: str) -> StepOut:
        outs, picks = self.system2[key]
        return outs[picks[select]]

    def system2_tokens(self, key) -> int:
        return sum(o.tokens for o in self.system2[key][0])


def majority(outs: Sequence[StepOut]) -> int:
    """Index of the first of the most frequent step texts."""
    counts = Counter(o.text for o in outs)
    top = max(counts.values())
    return next(j for j, o in enumerate(outs) if counts[o.text] == top)


def new_step_scores(verifier, problems, completions, prefixes) -> list[float]:
    """The verifier's score of the newest step of every completion: its running step score
    (P(no error up to this step)) when it ends with ';', else the completion's score (an answer:
    min with the answer's P(correct); 0 for an unfinished step). The k candidates of a node share
    their prefix, so they differ only where the new step's own score is below the prefix's."""
    step_scores, scores = verifier.score_many(problems, completions)
    out = []
    for steps, score, comp, pre in zip(step_scores, scores, completions, prefixes):
        j = len(reasoning.split_steps(pre))
        out.append(steps[j] if comp.endswith(reasoning.STEP_END) and len(steps) > j else score)
    return out


# ----------------------------------------------------------------------------- difficulty scorers
def context_features(problem: reasoning.Problem, j: int) -> list[float]:
    """What the step's context shows: its operation (one-hot over '+-*') and relative position."""
    op = problem.ops[j][0] if j < problem.difficulty else ""
    return [float(op == o) for o in reasoning.OPS] + [j / max(1, problem.difficulty - 1)]


class Scorer:
    """A difficulty score in [0, 1] per step, fitted on held-out problems' greedy steps.

    ``entropy``: the empirical CDF of the step's max token entropy among the held-out steps
    (tau = 0.7: System 2 for steps more uncertain than 70 % of held-out steps).
    ``regressor``: logistic regression of P(greedy step wrong) on the three entropy features and
    the step's context (operation, position). With one class only in the held-out labels (a
    policy that is always right or always wrong) it returns that share for every step."""

    def __init__(self, signal: str):
        if signal not in SIGNALS:
            raise ValueError(f"signal: must be one of {SIGNALS}, got {signal!r}")
        self.signal = signal
        self.ref: np.ndarray | None = None
        self.model = None
        self.constant: float | None = None

    def fit(self, feats: np.ndarray, context: np.ndarray, wrong: np.ndarray) -> Scorer:
        feats, wrong = np.asarray(feats, float), np.asarray(wrong, bool)
        if len(feats) == 0:
            raise ValueError("feats: the scorer needs held-out steps (assessor_problems >= 1)")
        if self.signal == "entropy":
            self.ref = np.sort(feats[:, 0])
        elif len(set(wrong.tolist())) < 2:
            self.constant = float(wrong.mean())
        else:
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            self.model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
            self.model.fit(np.hstack([feats, context]), wrong)
        return self

    def score(self, feats: np.ndarray, context: np.ndarray) -> np.ndarray:
        feats = np.atleast_2d(np.asarray(feats, float))
        if self.signal == "entropy":
            if self.ref is None:
                raise ValueError("scorer: call fit first")
            return np.searchsorted(self.ref, feats[:, 0], side="right") / len(self.ref)
        if self.constant is not None:
            return np.full(len(feats), self.constant)
        if self.model is None:
            raise ValueError("scorer: call fit first")
        return self.model.predict_proba(np.hstack([feats, np.atleast_2d(context)]))[:, 1]


def gold_context_steps(tree: StepTree) -> pd.DataFrame:
    """Every step of every problem of ``tree`` decoded greedily from the GOLD prefix: features,
    context and whether the greedy step is wrong (the assessor's training / evaluation data)."""
    keys = [(i, gold_prefix(p, j)) for i, p in enumerate(tree.problems) for j in range(p.difficulty)]
    tree.fill_greedy(keys)
    rows = []
    for i, pre in keys:
        p = tree.problems[i]
        j = len(reasoning.split_steps(pre))
        out, f = tree.greedy[(i, pre)]
        rows.append({"problem": i, "step": j, "op": p.ops[j][0], "max_entropy": f[0], "mean_entropy": f[1],
                     "min_logprob": f[2], "context": context_features(p, j), "wrong": step_wrong(p, pre, out)})
    return pd.DataFrame(rows)


FEATURES = ["max_entropy", "mean_entropy", "min_logprob"]


def fit_scorer(signal: str, steps: pd.DataFrame) -> Scorer:
    return Scorer(signal).fit(steps[FEATURES].to_numpy(), np.array(steps["context"].tolist()), steps["wrong"].to_numpy())


def auroc(wrong: Sequence[bool], score: Sequence[float]) -> float | None:
    """AUROC of the score for 'the step is wrong' (None with one class only)."""
    from sklearn.metrics import roc_auc_score

    wrong = list(map(bool, wrong))
    return float(roc_auc_score(wrong, list(score))) if 0 < sum(wrong) < len(wrong) else None


# ----------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    name: str
    kind: Literal["s1", "s2", "scale", "random"]
    select: str = "prm"  # how System 2 picks among its k samples
    signal: str = ""  # scale: the scorer
    tau: float = 0.0  # scale: System 2 when score > tau
    fraction: float = 0.0  # random: share of steps given System 2


def methods(taus: Sequence[float], fractions: Sequence[float], signals: Sequence[str], select: str) -> list[Method]:
    """uniform System 1, uniform System 2 (and with majority voting when ``select`` is prm),
    SCALE(tau) per signal, random allocation per fraction."""
    out = [Method("s1", "s1", select), Method("s2", "s2", select)]
    if select != "majority":
        out.append(Method("s2_majority", "s2", "majority"))
    out += [Method(f"scale_{s}_t{round(t * 100):03d}", "scale", select, s, t) for s in signals for t in taus]
    out += [Method(f"random_f{round(f * 100):03d}", "random", select, fraction=f) for f in fractions]
    return out


def coin(seed: int, i: int, j: int) -> float:
    """The uniform draw of random allocation for step j of problem i (the same for every
    fraction: the System-2 steps of a smaller fraction are a subset of a larger one's)."""
    return random.Random(f"p08/{seed}/{i}/{j}").random()


def execute(tree: StepTree, todo: Sequence[Method], scorers: dict[str, Scorer], seed: int = 0,
            progress=None) -> pd.DataFrame:
    """Run every method step by step over the tree's problems; one row per method: accuracy,
    mean generated tokens per problem (assessment and answer included), the System-2 share of
    the steps, and the PRM-scored candidates per problem."""
    P, N = tree.problems, len(tree.problems)
    names = [m.name for m in todo]
    if len(set(names)) != len(names):
        raise ValueError(f"methods: names must be unique, got {names}")
    for m in todo:
        if m.kind == "scale" and m.signal not in scorers:
            raise ValueError(f"signal: {m.signal!r} has no fitted scorer (have {sorted(scorers)})")
    prefix = {m.name: [""] * N for m in todo}
    done = {m.name: [False] * N for m in todo}
    tokens = {m.name: [0] * N for m in todo}
    steps = {m.name: 0 for m in todo}
    s2 = {m.name: 0 for m in todo}
    scored = {m.name: 0 for m in todo}
    score_cache: dict[tuple[str, int, str], float] = {}
    depth = max(p.difficulty for p in P)
    for j in (progress(range(depth), desc="steps") if progress else range(depth)):
        active = {m.name: [i for i in range(N) if not done[m.name][i] and j < P[i].difficulty] for m in todo}
        need = {(i, prefix[m.name][i]) for m in todo if m.kind in ("s1", "scale") for i in active[m.name]}
        need |= {(i, prefix[m.name][i]) for m in todo if m.kind == "random" for i in active[m.name]
                 if coin(seed, i, j) >= m.fraction}
        tree.fill_greedy(need)
        for signal in {m.signal for m in todo if m.kind == "scale"}:
            keys = sorted({(i, prefix[m.name][i]) for m in todo if m.kind == "scale" and m.signal == signal
                           for i in active[m.name]} - {k[1:] for k in score_cache if k[0] == signal})
            if keys:
                feats = np.array([tree.greedy[k][1] for k in keys])
                ctx = np.array([context_features(P[i], j) for i, _ in keys])
                for k, v in zip(keys, scorers[signal].score(feats, ctx)):
                    score_cache[(signal, *k)] = float(v)
        plan = {}  # (method, i) -> System 2?
        for m in todo:
            for i in active[m.name]:
                key = (i, prefix[m.name][i])
                plan[(m.name, i)] = (m.kind == "s2" or (m.kind == "random" and coin(seed, i, j) < m.fraction)
                                     or (m.kind == "scale" and score_cache[(m.signal, *key)] > m.tau))
        for select in sorted({m.select for m in todo}):
            tree.fill_system2({(i, prefix[m.name][i]) for m in todo if m.select == select for i in active[m.name]
                               if plan[(m.name, i)]}, select)
        for m in todo:
            for i in active[m.name]:
                key = (i, prefix[m.name][i])
                if plan[(m.name, i)]:
                    out = tree.chosen(key, m.select)
                    # System 2's k samples, and SCALE's assessment decode (wasted on a hard step)
                    cost = tree.system2_tokens(key) + (tree.greedy[key][0].tokens if m.kind == "scale" else 0)
                    s2[m.name] += 1
                    scored[m.name] += tree.k if m.select == "prm" else 0
                else:
                    out = tree.greedy[key][0]
                    cost = out.tokens
                tokens[m.name][i] += cost
                steps[m.name] += 1
                prefix[m.name][i] += out.text
                done[m.name][i] = out.done
    # the answer: one greedy segment ("#v" + EOS) after the last step, System 1 for every method
    tree.fill_greedy({(i, prefix[m.name][i]) for m in todo for i in range(N) if not done[m.name][i]})
    rows = []
    for m in todo:
        for i in range(N):
            if not done[m.name][i]:
                out = tree.greedy[(i, prefix[m.name][i])][0]
                tokens[m.name][i] += out.tokens
                prefix[m.name][i] += out.text
        correct = [reasoning.check(p, t) for p, t in zip(P, prefix[m.name])]
        rows.append({"method": m.name, "kind": m.kind, "select": m.select, "signal": m.signal or None,
                     "tau": m.tau if m.kind == "scale" else None, "fraction": m.fraction if m.kind == "random" else None,
                     "accuracy": sum(correct) / N, "tokens": sum(tokens[m.name]) / N,
                     "s2_fraction": s2[m.name] / max(1, steps[m.name]), "steps": steps[m.name],
                     "prm_scored": scored[m.name] / N})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the claims
def claim_metrics(table: pd.DataFrame, signal: str, tolerance: float, budget: float, default_tau: float) -> dict:
    """The planning notes' criteria for one signal's tau sweep (accuracies as fractions):

    - ``near_s2_token_ratio``: the fewest tokens (/ uniform System 2's) of a SCALE point within
      ``tolerance`` of uniform System 2's accuracy (1.0: none, System 2 itself);
    - ``operating_tau``: that point's tau (``default_tau`` when none qualifies);
    - ``random_gap``: SCALE's accuracy at the operating tau minus random allocation's at the same
      token cost (linear interpolation along random's fraction sweep, uniform S1 = fraction 0,
      uniform S2 = fraction 1; clamped at the ends);
    - ``interp_min_gap`` / ``interp_mean_gap``: over the SCALE points with a System-2 share
      strictly between 0 and 1, accuracy minus the straight line from uniform S1 to uniform S2
      at the same tokens (clamped beyond uniform S2); None without such points;
    - ``gain_at_budget``: the best SCALE accuracy at <= ``budget`` x uniform S2's tokens minus
      uniform S2's (the paper's "more accurate with fewer tokens"; None without such a point);
    - ``s2_gain``: uniform S2's accuracy minus uniform S1's. Below ``tolerance`` every SCALE point
      that keeps System 1's accuracy is "within tolerance of S2", so ``near_s2_token_ratio`` and
      ``gain_at_budget`` would hold vacuously: both are None then (not run), and the operating
      point is ``default_tau``."""
    s1 = table.loc[table["method"] == "s1"].iloc[0]
    s2 = table.loc[table["method"] == "s2"].iloc[0]
    sc = table[(table["kind"] == "scale") & (table["signal"] == signal)].sort_values(["tokens", "tau"])
    if sc.empty:
        raise ValueError(f"signal: no SCALE rows for {signal!r}")
    ratio = sc["tokens"] / s2["tokens"]
    gain = float(s2["accuracy"] - s1["accuracy"])
    testable = gain >= tolerance - 1e-12  # System 2 must beat System 1 for "as accurate as S2" to mean anything
    near = sc[sc["accuracy"] >= s2["accuracy"] - tolerance]
    if not testable:
        near_ratio, tau = None, default_tau
    elif len(near) and float(ratio[near.index].min()) < 1.0:
        best = near.loc[ratio[near.index].idxmin()]
        near_ratio, tau = round(float(best["tokens"] / s2["tokens"]), 4), float(best["tau"])
    else:
        near_ratio, tau = 1.0, default_tau
    at = sc.loc[(sc["tau"] - tau).abs().idxmin()]
    rnd = pd.concat([table[table["kind"] == "random"], table[table["method"].isin(["s1", "s2"])]])
    rnd = rnd.sort_values("tokens")
    random_acc = float(np.interp(at["tokens"], rnd["tokens"], rnd["accuracy"]))
    interior = sc[(sc["s2_fraction"] > 0) & (sc["s2_fraction"] < 1)]
    line = np.interp(interior["tokens"], [s1["tokens"], s2["tokens"]], [s1["accuracy"], s2["accuracy"]])
    gaps = interior["accuracy"].to_numpy() - line
    cheap = sc[ratio <= budget]
    return {"s2_gain": round(gain, 4), "near_s2_token_ratio": near_ratio, "operating_tau": tau,
            "operating_accuracy": round(float(at["accuracy"]), 4), "operating_token_ratio": round(float(at["tokens"] / s2["tokens"]), 4),
            "operating_s2_fraction": round(float(at["s2_fraction"]), 4),
            "random_matched_accuracy": round(random_acc, 4), "random_gap": round(float(at["accuracy"]) - random_acc, 4),
            "interp_min_gap": round(float(gaps.min()), 4) if len(gaps) else None,
            "interp_mean_gap": round(float(gaps.mean()), 4) if len(gaps) else None,
            "gain_at_budget": round(float(cheap["accuracy"].max() - s2["accuracy"]), 4) if len(cheap) and testable else None}
