"""Step-level tree search over a policy with a process reward model: REBASE, beam search, DVTS and ETS.

The search follows the authors' ``rebase.py`` (SqueezeAILab/ETS) step by step, on our task and
policy (``shared.reasoning``):

* A tree per problem. The root holds the question (BOS + prompt); every other node is one step
  the policy wrote (``reasoning.extend``), scored by the PRM: the score of a node is the PRM's
  score of its newest step (``last``; for a finished node, the score of its answer).
* Every problem has a width budget W. At depth d the candidates are the unfinished nodes of
  depth d; a finished node (answer written, or out of steps) uses up one unit of the budget.
  A selection rule gives every candidate a number of children (0: pruned); the children are
  sampled, scored, and become the candidates of depth d + 1. The search ends when the budget
  is spent or nothing is left to expand.
* Selection rules (:func:`rebase_allocation`, :func:`beam_allocation`, :class:`DVTS`,
  :func:`ets_allocation`):
  REBASE gives the remaining width to the candidates in proportion to softmax(score / T),
  rounded up greedily from the best; beam search keeps the ceil(sqrt(width)) best and expands
  each ceil(width / keep) times; DVTS splits the first W candidates into ceil(sqrt(W))
  subtrees and continues the best child of every kept node within its subtree's budget; ETS
  solves an integer program per depth (:func:`ets_keep`) that trades the REBASE allocation
  (outcome weights) against the number of retained nodes (shared KV cache) and a coverage bonus
  for every semantic cluster kept, then re-applies REBASE to the kept nodes.
* KV size (:func:`kv_tokens`): at every depth, the tokens of the candidates plus those of their
  unique ancestors (``get_kv_size``: a prefix-shared cache holds each retained node once),
  summed over depths.
* The answer of a problem: weighted majority vote over the finished leaves, each weighted by
  its score (the repo's ``evaluate.sh``: ``majority_vote``, ``weighted``, ``last``).

Semantic clusters are the distinct intermediate values the new steps compute (the repo embeds
each step with a math BERT and clusters at cosine distance 0.05; on this task two steps that
reach the same value lead to the same state). The integer program is solved by HiGHS
(``scipy.optimize.milp``; the repo uses PuLP/CBC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

METHODS = ("rebase", "beam", "dvts", "ets", "ets_no_coverage")
LAMBDA_C_ZERO_GUARD = 1e-4  # rebase.py: lambda_c = 0 becomes a tiny bonus per kept node


# ----------------------------------------------------------------------------- allocation rules
def rebase_allocation(scores: Sequence[float], width: int, temperature: float,
                      keep: Sequence[bool] | None = None) -> list[int]:
    """Children per candidate: softmax(score / T) of the width, rounded up greedily from the best.

    Candidates are visited by descending score (ties: earlier first); each gets
    ceil(width_left * w / sum of the weights not yet visited) and width_left shrinks by it.
    ``keep``: candidates outside it get weight 0 (ETS re-applies REBASE to its kept nodes)."""
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    n = len(scores)
    keep = [True] * n if keep is None else list(keep)
    if len(keep) != n:
        raise ValueError(f"keep: needs one flag per score ({n}), got {len(keep)}")
    out = [0] * n
    if not any(keep) or width <= 0:
        return out
    top = max(s for s, k in zip(scores, keep) if k)
    weights = [math.exp((s - top) / temperature) if k else 0.0 for s, k in zip(scores, keep)]
    order = sorted(range(n), key=lambda i: (-weights[i], i))
    left = width
    for pos, i in enumerate(order):
        rest = sum(weights[j] for j in order[pos:])
        if rest <= 0 or left <= 0:
            break
        num = math.ceil(left * weights[i] / rest - 1e-9)
        out[i] = num
        left -= num
    return out


def beam_allocation(scores: Sequence[float], width: int, depth: int) -> list[int]:
    """Beam search of rebase.py: at depth 0 the root gets the whole width; later the
    ceil(sqrt(width)) best candidates get ceil(width / keep) children each."""
    n = len(scores)
    if depth == 0:
        return [width] + [0] * (n - 1)
    keep = math.ceil(math.sqrt(width))
    num = math.ceil(width / keep)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    out = [0] * n
    for i in order[:keep]:
        out[i] = num
    return out


# ----------------------------------------------------------------------------- the ETS program
def ets_keep(outcome: Sequence[float], ancestors: Sequence[Sequence[int]], clusters: Sequence[int] | None,
             lambda_c: float, lambda_s: float) -> list[bool]:
    """Which candidates ETS keeps: the integer program of ``select_softmax_costmodel``.

    Variables x_i (keep candidate i), y_j (keep ancestor node j), c_k (cluster k covered), all
    binary. Maximise sum_i O_i x_i - lambda_c (sum_j y_j + sum_i x_i) / (M + N)
    + (lambda_s / K) sum_k c_k subject to y_j <= sum of x_i below j, y_j >= x_i for every i below
    j, c_k <= sum of x_i in cluster k, and sum_i x_i >= 1. ``ancestors[i]``: ids of the nodes
    above candidate i (root included); ``clusters``: a label per candidate, or None (no coverage
    term). lambda_c = 0 becomes a bonus of 1e-4 per kept node, as in the repo."""
    from scipy.optimize import LinearConstraint, milp

    n = len(outcome)
    if n == 0:
        return []
    if len(ancestors) != n:
        raise ValueError(f"ancestors: needs one list per candidate ({n}), got {len(ancestors)}")
    if lambda_c < 0 or lambda_s < 0:
        raise ValueError(f"lambda_c, lambda_s: must be >= 0, got {lambda_c}, {lambda_s}")
    branch_ids = sorted({a for anc in ancestors for a in anc})
    col = {b: n + j for j, b in enumerate(branch_ids)}
    m = len(branch_ids)
    labels = sorted(set(clusters)) if clusters is not None else []
    k = len(labels)
    size = n + m + k
    per_node = -lambda_c / (m + n) if lambda_c > 0 else LAMBDA_C_ZERO_GUARD / (m + n)
    gain = np.zeros(size)
    gain[:n] = np.asarray(outcome, dtype=float) + per_node
    gain[n:n + m] = per_node
    if k:
        gain[n + m:] = lambda_s / k
    rows, lo, hi = [], [], []

    def row(entries: dict[int, float], low: float, high: float) -> None:
        r = np.zeros(size)
        for c, v in entries.items():
            r[c] += v
        rows.append(r)
        lo.append(low)
        hi.append(high)

    below: dict[int, list[int]] = {b: [] for b in branch_ids}
    for i, anc in enumerate(ancestors):
        for a in set(anc):
            below[a].append(i)
    for b, leaves in below.items():
        row({col[b]: 1.0, **{i: -1.0 for i in leaves}}, -np.inf, 0.0)  # y_j <= sum x_i
        for i in leaves:
            row({i: 1.0, col[b]: -1.0}, -np.inf, 0.0)  # x_i <= y_j
    for c, label in enumerate(labels):
        members = [i for i, lab in enumerate(clusters) if lab == label]
        row({n + m + c: 1.0, **{i: -1.0 for i in members}}, -np.inf, 0.0)  # c_k <= sum x_i
    row({i: 1.0 for i in range(n)}, 1.0, np.inf)  # keep at least one node
    res = milp(-gain, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(size),
               bounds=(0, 1))
    if res.x is None:
        raise RuntimeError(f"ets_keep: HiGHS found no solution ({res.message})")
    return [bool(v > 0.5) for v in res.x[:n]]


def ets_allocation(scores: Sequence[float], width: int, temperature: float, ancestors: Sequence[Sequence[int]],
                   clusters: Sequence[int] | None, lambda_c: float, lambda_s: float) -> tuple[list[int], list[bool]]:
    """ETS: outcome weights O_i = REBASE's allocation / its sum, the program of :func:`ets_keep`,
    then REBASE re-applied to the kept candidates. Returns (children per candidate, kept)."""
    alloc = rebase_allocation(scores, width, temperature)
    total = sum(alloc)
    outcome = [a / total for a in alloc] if total else [0.0] * len(alloc)
    keep = ets_keep(outcome, ancestors, clusters, lambda_c, lambda_s)
    return rebase_allocation(scores, width, temperature, keep), keep


def step_value(step: str) -> str:
    """The semantic label of a step: the value it computes (after the last '='), else the text."""
    body = step.rstrip(";")
    return body.rsplit("=", 1)[1] if "=" in body else body


def coverage_clusters(steps: Sequence[str]) -> list[int] | None:
    """Cluster labels of the new steps (equal computed values), or None when the coverage term is
    off as in the repo: fewer than two candidates or a single distinct step text."""
    if len(steps) < 2 or len(set(steps)) < 2:
        return None
    index: dict[str, int] = {}
    return [index.setdefault(step_value(s), len(index)) for s in steps]


# ----------------------------------------------------------------------------- the tree
@dataclass
class Node:
    id: int
    parent: int | None
    text: str  # the completion so far (root: "")
    tokens: int  # tokens this node adds to the KV cache (root: BOS + prompt)
    score: float
    depth: int
    done: bool = False
    subtree: int | None = None  # DVTS


@dataclass
class Tree:
    """The search tree of one problem and its accounting."""

    nodes: list[Node]
    remaining: int  # width budget left
    subtree_left: list[int] | None = None  # DVTS: budget per subtree
    kv_per_depth: list[int] = field(default_factory=list)  # kv_tokens at every selection
    step_tokens: list[int] = field(default_factory=list)  # longest step generated after every selection
    calls: int = 0  # expansions (sequences generated), rebase.py's num_model_calls
    tokens: int = 0  # generated tokens
    kept: int = 0  # candidates given children, summed over depths
    candidates: int = 0  # candidates seen, summed over depths

    def ancestors(self, node: Node) -> list[int]:
        out, p = [], node.parent
        while p is not None:
            out.append(p)
            p = self.nodes[p].parent
        return out


def kv_tokens(tree: Tree, candidates: Sequence[Node]) -> int:
    """rebase.py's get_kv_size: tokens of the candidates plus their unique ancestors."""
    unique: dict[int, int] = {}
    for node in candidates:
        for a in tree.ancestors(node):
            unique[a] = tree.nodes[a].tokens
    return sum(n.tokens for n in candidates) + sum(unique.values())


class DVTS:
    """Diverse verifier tree search as rebase.py's select_dvts: ceil(sqrt(W)) subtrees of
    W // subtrees width each; the first W candidates are split into contiguous groups (cycled
    when fewer), the best of each group starts its subtree; later, the best child of every
    expanded node continues, with its subtree's remaining width."""

    @staticmethod
    def setup(tree: Tree, width: int) -> None:
        k = math.ceil(math.sqrt(width))
        tree.subtree_left = [width // k] * k

    @staticmethod
    def allocate(tree: Tree, cands: list[Node], scores: list[float], width: int, depth: int) -> list[tuple[Node, int, int | None]]:
        """(node, children, subtree of the children) for every expansion."""
        if depth == 0:
            return [(cands[0], width, None)]
        k = len(tree.subtree_left)
        if depth == 1:
            pairs = list(zip(cands, scores))
            if len(pairs) < k:
                pairs = [pairs[i % len(pairs)] for i in range(k)]
            size, extra = divmod(len(pairs), k)
            out, start = [], 0
            for g in range(k):
                end = start + size + (1 if g < extra else 0)
                best = max(range(start, end), key=lambda j: (pairs[j][1], -j))
                out.append((pairs[best][0], tree.subtree_left[g], g))
                start = end
            return out
        best: dict[int, tuple[float, int]] = {}
        for j, (node, s) in enumerate(zip(cands, scores)):
            if node.parent not in best or s > best[node.parent][0]:
                best[node.parent] = (s, j)
        return [(cands[j], tree.subtree_left[cands[j].subtree], cands[j].subtree) for _, j in best.values()]


# ----------------------------------------------------------------------------- scores
class NoisyOracle:
    """The exact step checker with label noise (the planning notes' PRM option): every step label
    (``reasoning.step_correct``) and the answer label (``reasoning.check``) is flipped with
    probability ``noise``, decided by a hash of (seed, problem, text up to that label), so one
    prefix always gets the same score, whichever method asks."""

    def __init__(self, noise: float, seed: int = 0):
        if not 0 <= noise < 0.5:
            raise ValueError(f"verifier_noise: must be in [0, 0.5), got {noise}")
        self.noise, self.seed = noise, seed

    def _flip(self, *key) -> bool:
        import hashlib

        digest = hashlib.blake2b(repr((self.seed, *key)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") / 2**64 < self.noise

    def score_rows(self, problems, texts) -> list[tuple[list[float], float | None]]:
        """Per text: (step scores, answer score or None), the interface of ``reasoning.Verifier.score_rows``."""
        from shared import reasoning

        out = []
        for p, t in zip(problems, texts):
            steps = reasoning.split_steps(t)
            ok = reasoning.step_correct(p, t)
            prefix = [";".join(steps[: j + 1]) for j in range(len(steps))]
            scores = [float(o != self._flip(p.prompt, pre)) for o, pre in zip(ok, prefix)]
            answer = None
            if reasoning.answer_of(t) is not None:
                answer = float(reasoning.check(p, t) != self._flip(p.prompt, t, "#"))
            out.append((scores, answer))
        return out


def last_scores(verifier, problems, texts) -> list[float]:
    """Score of every node: the verifier's score of its newest step, or of its answer once written
    (rebase.py takes the last score; evaluate.sh votes with ``last``). An empty text scores 1.
    ``verifier.score_rows`` gives (step scores, answer score or None) per text."""
    rows = verifier.score_rows(list(problems), list(texts))
    return [o if o is not None else (s[-1] if s else 1.0) for s, o in rows]


def weighted_vote(leaves: Sequence[Node]) -> int | None:
    """The answer with the largest summed score over the finished leaves (ties: seen first)."""
    from shared import reasoning

    votes: dict[int, float] = {}
    for node in leaves:
        a = reasoning.answer_of(node.text)
        if a is not None:
            votes[a] = votes.get(a, 0.0) + node.score
    return max(votes, key=lambda a: votes[a]) if votes else None


# ----------------------------------------------------------------------------- the search
@dataclass
class SearchConfig:
    method: str
    width: int
    temperature: float = 1.0  # sampling temperature of the policy
    softmax_temperature: float = 0.2  # T of REBASE's softmax
    lambda_c: float = 1.0
    lambda_s: float = 0.0
    extra_steps: int = 2  # depth limit: difficulty + 1 (answer) + this
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method: {self.method!r} is not one of {', '.join(METHODS)}")
        if self.width < 1:
            raise ValueError(f"width: must be >= 1, got {self.width}")


@dataclass
class SearchOutcome:
    answers: list[int | None]
    correct: list[bool]
    trees: list[Tree]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)


def search(policy, verifier, problems, cfg: SearchConfig, progress=None) -> SearchOutcome:
    """Run one method on every problem; the problems advance depth by depth together (one
    batched ``extend`` and one batched PRM pass per depth)."""
    from shared import reasoning

    problems = list(problems)
    trees = []
    for p in problems:
        tree = Tree([Node(0, None, "", len(reasoning.prompt_ids(p)), 1.0, 0)], cfg.width)
        if cfg.method == "dvts":
            DVTS.setup(tree, cfg.width)
        trees.append(tree)
    max_depth = max(p.difficulty for p in problems) + 1 + cfg.extra_steps
    lambda_s = cfg.lambda_s if cfg.method == "ets" else 0.0
    depths = range(max_depth)
    for depth in progress(depths, desc=f"{cfg.method} W={cfg.width}") if progress else depths:
        jobs = []  # (problem index, parent node, subtree of the child)
        for i, tree in enumerate(trees):
            for node in tree.nodes:
                if node.depth == depth and node.done:
                    tree.remaining -= 1
                    if tree.subtree_left is not None and node.subtree is not None:
                        tree.subtree_left[node.subtree] -= 1
            cands = [n for n in tree.nodes if n.depth == depth and not n.done]
            if tree.remaining <= 0 or not cands:
                continue
            scores = [n.score for n in cands]
            tree.kv_per_depth.append(kv_tokens(tree, cands))
            tree.candidates += len(cands)
            if cfg.method == "dvts":
                plan = DVTS.allocate(tree, cands, scores, tree.remaining, depth)
            else:
                if cfg.method == "rebase":
                    alloc = rebase_allocation(scores, tree.remaining, cfg.softmax_temperature)
                elif cfg.method == "beam":
                    alloc = beam_allocation(scores, tree.remaining, depth)
                else:
                    parent_len = [len(tree.nodes[n.parent].text) if n.parent is not None else 0 for n in cands]
                    steps = [n.text[k:] for n, k in zip(cands, parent_len)]
                    clusters = coverage_clusters(steps) if lambda_s > 0 else None
                    alloc, _ = ets_allocation(scores, tree.remaining, cfg.softmax_temperature,
                                              [tree.ancestors(n) for n in cands], clusters, cfg.lambda_c, lambda_s)
                plan = [(n, a, None) for n, a in zip(cands, alloc)]
            plan = [(n, a, g) for n, a, g in plan if a > 0]
            tree.kept += len(plan)
            jobs += [(i, n, g) for n, a, g in plan for _ in range(a)]
        if not jobs:
            break
        steps = reasoning.extend(policy, [problems[i] for i, _, _ in jobs], [n.text for _, n, _ in jobs], n=1,
                                 temperature=cfg.temperature, seed=cfg.seed * 1009 + depth)
        last = depth + 1 == max_depth
        children = []
        for (i, parent, g), texts, dones in zip(jobs, steps.texts, steps.done):
            text, done = texts[0], dones[0]
            tokens = len(text) + (1 if done else 0)  # one token per character, EOS when the answer ended
            tree = trees[i]
            child = Node(len(tree.nodes), parent.id, parent.text + text, tokens, 0.0, depth + 1, done or last,
                         g if g is not None else parent.subtree)
            tree.nodes.append(child)
            tree.calls += 1
            tree.tokens += tokens
            children.append((i, child))
        longest: dict[int, int] = {}
        for i, child in children:
            longest[i] = max(longest.get(i, 0), child.tokens)
        for i, n in longest.items():
            trees[i].step_tokens.append(n)
        scores = last_scores(verifier, [problems[i] for i, _ in children], [c.text for _, c in children])
        for (_, child), s in zip(children, scores):
            child.score = s
    answers = [weighted_vote([n for n in t.nodes if n.done]) for t in trees]
    return SearchOutcome(answers, [a == p.answer for a, p in zip(answers, problems)], trees)


# ----------------------------------------------------------------------------- summaries
def time_proxy_bytes(tree: Tree, kv_bytes_per_token: int, weight_bytes: float, concurrency: int) -> float:
    """A memory-bound time proxy of one search: every decode iteration of a depth reads the
    retained tree's KV once (prefix sharing) and 1/concurrency of the weights (that many searches
    share a batch); a depth takes as many iterations as its longest step."""
    return float(sum(steps * (weight_bytes / concurrency + kv * kv_bytes_per_token)
                     for kv, steps in zip(tree.kv_per_depth, tree.step_tokens)))


def summarise(outcome: SearchOutcome, kv_bytes_per_token: int, weight_bytes: float, concurrency: int) -> dict[str, float]:
    """Per-problem means of a method's costs and its accuracy."""
    trees = outcome.trees
    n = len(trees)
    return {"accuracy": outcome.accuracy,
            "kv_tokens": sum(sum(t.kv_per_depth) for t in trees) / n,
            "kv_tokens_per_depth": sum(sum(t.kv_per_depth) / max(1, len(t.kv_per_depth)) for t in trees) / n,
            "model_calls": sum(t.calls for t in trees) / n,
            "tokens": sum(t.tokens for t in trees) / n,
            "kept_share": sum(t.kept for t in trees) / max(1, sum(t.candidates for t in trees)),
            "time_proxy_mb": sum(time_proxy_bytes(t, kv_bytes_per_token, weight_bytes, concurrency) for t in trees) / n / 1e6,
            "answered": sum(a is not None for a in outcome.answers) / n}


def compare(policy, verifier, problems, widths: Sequence[int], lambda_s: dict[int, float], *, concurrency: int,
            progress=None, **cfg):
    """Every method at every width on the same problems. Returns (summary rows, per-depth KV
    rows, wall seconds per (width, method)); ``cfg``: the other SearchConfig fields."""
    import time

    import pandas as pd

    from shared import reasoning

    kv_bpt = reasoning.kv_bytes_per_token(policy.spec, policy.dtype_bytes)
    weight_bytes = sum(p.numel() * p.element_size() for p in policy.model.parameters())
    rows, depth_rows, seconds = [], [], {}
    for width in widths:
        for method in METHODS:
            start = time.perf_counter()
            out = search(policy, verifier, problems, SearchConfig(method, width, lambda_s=lambda_s[width], **cfg),
                         progress=progress)
            seconds[f"w{width}_{method}"] = time.perf_counter() - start
            rows.append({"width": width, "method": method, **summarise(out, kv_bpt, weight_bytes, concurrency)})
            longest = max(len(t.kv_per_depth) for t in out.trees)
            for d in range(longest):
                kv = [t.kv_per_depth[d] for t in out.trees if d < len(t.kv_per_depth)]
                depth_rows.append({"width": width, "method": method, "depth": d, "kv_tokens": sum(kv) / len(out.trees),
                                   "searching": len(kv) / len(out.trees)})
    return pd.DataFrame(rows), pd.DataFrame(depth_rows), seconds


CEILING = 0.99  # accuracy at or above which a method is at the ceiling


def uninformative(accuracies) -> bool:
    """True when the compared accuracies cannot rank the methods: all at the ceiling (>= CEILING)
    or all tied. Added after the cpu run where every method scored 1.00."""
    values = [float(a) for a in accuracies]
    return min(values) >= CEILING or max(values) == min(values)


def claim_metrics(summary, width: int) -> dict[str, float | int | None]:
    """The numbers the claims are checked against, at ``width``. An accuracy comparison is None
    ("not run") when its methods are uninformative (all >= CEILING or all tied); the flags
    ``uninformative_<metric>`` say which."""
    at = summary[summary["width"] == width].set_index("method")
    acc, kv, t = at["accuracy"], at["kv_tokens"], at["time_proxy_mb"]
    others = [m for m in METHODS if m != "beam"]
    compared = {"ets_accuracy_delta": ["ets", "rebase"], "beam_lowest_accuracy": list(METHODS),
                "no_coverage_accuracy_gain": ["ets_no_coverage", "ets"]}
    flags = {k: uninformative(acc[m]) for k, m in compared.items()}
    out = {"ets_kv_ratio": round(float(kv["ets"] / kv["rebase"]), 4),
           "ets_accuracy_delta": round(float(acc["ets"] - acc["rebase"]), 4),
           "ets_throughput_proxy_ratio": round(float(t["rebase"] / t["ets"]), 4),
           "ets_calls_ratio": round(float(at.loc["ets", "model_calls"] / at.loc["rebase", "model_calls"]), 4),
           "beam_smallest_kv": int(kv["beam"] <= kv[others].min()),  # 1: yes (ties count)
           "beam_lowest_accuracy": int(acc["beam"] <= acc[others].min()),
           "no_coverage_accuracy_gain": round(float(acc["ets_no_coverage"] - acc["ets"]), 4),
           "no_coverage_kv_ratio": round(float(kv["ets_no_coverage"] / kv["ets"]), 4)}
    for k, flag in flags.items():
        out[f"uninformative_{k}"] = int(flag)
        if flag:
            out[k] = None
    return out


WEAK_KEYS = ("ets_accuracy_delta", "beam_lowest_accuracy", "no_coverage_accuracy_gain", "ets_kv_ratio")


def weak_metrics(summary, width: int | None) -> dict[str, float | int | None]:
    """The weak-policy regime's numbers, prefixed ``weak_``: its accuracy comparisons (and KV ratio)
    at ``width`` under :func:`claim_metrics`' ceiling rule, and every method's accuracy there; all
    None when the regime did not run (``summary`` None)."""
    if summary is None:
        return {f"weak_{k}": None for k in WEAK_KEYS} | {"weak_claim_width": width}
    found = claim_metrics(summary, width)
    at = summary[summary["width"] == width].set_index("method")
    out = {f"weak_{k}": found[k] for k in WEAK_KEYS}
    out |= {f"weak_uninformative_{k}": found[f"uninformative_{k}"] for k in WEAK_KEYS if f"uninformative_{k}" in found}
    out |= {f"weak_{m}_accuracy": round(float(at.loc[m, "accuracy"]), 4) for m in METHODS}
    return out | {"weak_claim_width": width}
