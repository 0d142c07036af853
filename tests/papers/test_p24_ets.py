"""Paper 24 (ETS): the selection rules, the integer program against brute force, KV accounting, the search."""

import itertools
import math
import random

import pandas as pd
import pytest

from paper24 import config, search
from shared import reasoning

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rebase_allocation_is_the_greedy_softmax_of_the_width():
    # one dominant score takes everything: ceil(4 * 1 / (1 + e^-2.5 + e^-5)) = 4
    assert search.rebase_allocation([1.0, 0.5, 0.0], 4, 0.2) == [4, 0, 0]
    # equal scores split evenly, ties in order
    assert search.rebase_allocation([0.5] * 4, 8, 0.2) == [2, 2, 2, 2]
    assert search.rebase_allocation([0.5] * 3, 4, 0.2) == [2, 1, 1]
    # hand-checked: weights 1, e^-1, e^-1 (T = 0.2, gaps 0.2); 5 * 1 / (1 + 2 e^-1) = 2.88 -> 3, then 1, 1
    assert search.rebase_allocation([0.2, 0.9, 0.7, 0.7], 5, 0.2) == [0, 3, 1, 1]
    rng = random.Random(0)
    for _ in range(50):
        scores = [rng.random() for _ in range(rng.randint(1, 12))]
        width = rng.randint(1, 64)
        alloc = search.rebase_allocation(scores, width, 0.2)
        assert sum(alloc) == width  # every unit of width is given out
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        assert all(alloc[a] >= alloc[b] for a, b in zip(order, order[1:]))  # better never gets fewer
    # kept mask: the others get nothing
    assert search.rebase_allocation([0.9, 0.8, 0.1], 6, 0.2, keep=[False, True, True]) == [0, 6, 0]
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        search.rebase_allocation([0.5], 2, 0.0)


def test_beam_allocation_keeps_sqrt_width():
    assert search.beam_allocation([1.0], 16, depth=0) == [16]
    alloc = search.beam_allocation([0.1 * i for i in range(16)], 16, depth=2)
    assert sorted(alloc, reverse=True)[:5] == [4, 4, 4, 4, 0] and alloc[-4:] == [4, 4, 4, 4]
    assert sorted(search.beam_allocation([0.5] * 10, 12, depth=1), reverse=True)[:4] == [3, 3, 3, 3]  # ceil(sqrt 12) = 4


def _objective(x, outcome, ancestors, clusters, lam_c, lam_s):
    n = len(outcome)
    branches = {a for anc in ancestors for a in anc}
    kept_branches = {a for i in range(n) if x[i] for a in ancestors[i]}
    per = -lam_c / (len(branches) + n)
    value = sum(o for o, k in zip(outcome, x) if k) + per * (sum(x) + len(kept_branches))
    if clusters is not None:
        labels = set(clusters)
        value += lam_s / len(labels) * len({c for c, k in zip(clusters, x) if k})
    return value


def test_ets_program_matches_brute_force():
    rng = random.Random(1)
    for trial in range(25):
        n = rng.randint(1, 8)
        parents = [rng.randint(1, 3) for _ in range(n)]  # root 0, three branch nodes, grandparents 4/5
        ancestors = [[p, 4 + p % 2, 0] for p in parents]
        raw = [rng.random() for _ in range(n)]
        outcome = [r / sum(raw) for r in raw]
        clusters = [rng.randint(0, 2) for _ in range(n)] if trial % 2 else None
        lam_c, lam_s = rng.choice([0.5, 1.0, 2.0]), rng.choice([0.5, 1.5])
        keep = search.ets_keep(outcome, ancestors, clusters, lam_c, lam_s)
        best = max(_objective(x, outcome, ancestors, clusters, lam_c, lam_s)
                   for x in itertools.product([0, 1], repeat=n) if sum(x) >= 1)
        assert sum(keep) >= 1
        assert math.isclose(_objective(keep, outcome, ancestors, clusters, lam_c, lam_s), best, abs_tol=1e-7)


def test_ets_prunes_a_lone_low_weight_branch_and_coverage_keeps_it():
    # two leaves share parent 1, one weak leaf hangs alone under parent 2
    ancestors = [[1, 0], [1, 0], [2, 0]]
    outcome = [0.5, 0.4, 0.1]
    assert search.ets_keep(outcome, ancestors, None, 1.0, 0.0) == [True, True, False]
    # its own cluster is worth lambda_s / K = 1.5 / 2 > its cost (2/6) - 0.1
    assert search.ets_keep(outcome, ancestors, [0, 0, 1], 1.0, 1.5) == [True, True, True]


def test_ets_without_costs_is_rebase():
    rng = random.Random(2)
    for _ in range(10):
        scores = [rng.random() for _ in range(8)]
        ancestors = [[1 + i % 3, 0] for i in range(8)]
        alloc, keep = search.ets_allocation(scores, 16, 0.2, ancestors, None, 0.0, 0.0)
        assert alloc == search.rebase_allocation(scores, 16, 0.2) and all(keep)


def test_clusters_are_intermediate_values():
    assert search.step_value("3+4=0;") == "0" and search.step_value("#5") == "#5"
    assert search.coverage_clusters(["3+4=0;", "3*2=6;", "2-2=0;"]) == [0, 1, 0]
    assert search.coverage_clusters(["3+4=0;", "3+4=0;"]) is None  # one distinct text: no coverage term (repo)
    assert search.coverage_clusters(["3+4=0;"]) is None


def test_kv_tokens_counts_shared_ancestors_once():
    nodes = [search.Node(0, None, "", 10, 1.0, 0), search.Node(1, 0, "a", 4, 1.0, 1),
             search.Node(2, 0, "b", 4, 1.0, 1), search.Node(3, 1, "ac", 3, 1.0, 2),
             search.Node(4, 1, "ad", 3, 1.0, 2), search.Node(5, 2, "be", 3, 1.0, 2)]
    tree = search.Tree(nodes, 4)
    assert search.kv_tokens(tree, nodes[3:5]) == 3 + 3 + 4 + 10  # siblings share parent 1 and the root
    assert search.kv_tokens(tree, nodes[3:6]) == 9 + 8 + 10
    assert search.kv_tokens(tree, nodes[:1]) == 10


def test_weighted_vote():
    leaves = [search.Node(i, 0, t, 1, s, 1, True) for i, (t, s) in enumerate([("#3", 0.9), ("#4", 0.5), ("#4", 0.5), ("x", 5.0)])]
    assert search.weighted_vote(leaves) == 4
    assert search.weighted_vote(leaves[3:]) is None


@pytest.fixture(scope="module")
def tiny(tiny_policy):
    return tiny_policy, reasoning.generate(3, 2, seed=5, modulus=7)


def test_search_invariants_on_a_real_policy(tiny):
    policy, problems = tiny
    oracle = reasoning.OracleVerifier()
    outs = {m: search.search(policy, oracle, problems, search.SearchConfig(m, 8, lambda_s=1.5, lambda_c=0.0
                                                                            if m == "ets_no_coverage" else 1.0))
            for m in search.METHODS}
    for m, out in outs.items():
        for p, tree in zip(problems, out.trees):
            assert tree.kv_per_depth[0] == len(reasoning.prompt_ids(p))  # depth 0: the question alone
            assert tree.calls == len(tree.nodes) - 1 and tree.tokens == sum(n.tokens for n in tree.nodes[1:])
            depth1 = [n for n in tree.nodes if n.depth == 1]
            assert len(depth1) == 8  # the root gets the whole width
    # ETS with lambda_c = 0 and no coverage term is REBASE, node for node
    rebase, plain = outs["rebase"].trees, outs["ets_no_coverage"].trees
    assert [[n.text for n in t.nodes] for t in rebase] == [[n.text for n in t.nodes] for t in plain]
    # the same seed gives the same search
    again = search.search(policy, oracle, problems, search.SearchConfig("ets", 8, lambda_s=1.5))
    assert [t.kv_per_depth for t in again.trees] == [t.kv_per_depth for t in outs["ets"].trees]
    with pytest.raises(ValueError, match="method: 'greedy' is not one of"):
        search.SearchConfig("greedy", 8)


def test_claim_metrics():
    rows = [{"width": 16, "method": m, "accuracy": a, "kv_tokens": kv, "time_proxy_mb": t, "model_calls": 10.0}
            for m, a, kv, t in [("rebase", 0.5, 100, 2.0), ("beam", 0.3, 50, 1.0), ("dvts", 0.4, 60, 1.2),
                                ("ets", 0.49, 60, 1.6), ("ets_no_coverage", 0.45, 55, 1.5)]]
    got = search.claim_metrics(pd.DataFrame(rows), 16)
    assert got["ets_kv_ratio"] == 0.6 and got["ets_accuracy_delta"] == -0.01 and got["ets_throughput_proxy_ratio"] == 1.25
    assert got["beam_smallest_kv"] == 1 and got["beam_lowest_accuracy"] == 1 and got["no_coverage_accuracy_gain"] == -0.04
    assert not any(got[f"uninformative_{k}"] for k in ("ets_accuracy_delta", "beam_lowest_accuracy", "no_coverage_accuracy_gain"))


def test_claim_metrics_ceiling_rule():
    def metrics(accs):
        rows = [{"width": 64, "method": m, "accuracy": a, "kv_tokens": kv, "time_proxy_mb": 1.0, "model_calls": 10.0}
                for m, a, kv in zip(search.METHODS, accs, [100, 50, 60, 60, 55])]
        return search.claim_metrics(pd.DataFrame(rows), 64)

    # rebase, beam, dvts, ets, ets_no_coverage: all at the ceiling -> every accuracy comparison is not run
    top = metrics([1.0, 0.995, 1.0, 0.99, 1.0])
    for k in ("ets_accuracy_delta", "beam_lowest_accuracy", "no_coverage_accuracy_gain"):
        assert top[k] is None and top[f"uninformative_{k}"] == 1
    assert top["ets_kv_ratio"] == 0.6 and top["beam_smallest_kv"] == 1  # KV claims unaffected
    # a tie below the ceiling voids only the comparison that ties; 0.985 is below the ceiling
    mixed = metrics([0.7, 0.5, 0.6, 0.7, 0.985])
    assert mixed["ets_accuracy_delta"] is None and mixed["uninformative_ets_accuracy_delta"] == 1
    assert mixed["beam_lowest_accuracy"] == 1 and mixed["no_coverage_accuracy_gain"] == 0.285
    assert search.uninformative([0.99, 0.999]) and not search.uninformative([0.98, 1.0])


def test_weak_metrics_prefix_the_claim_metrics_and_are_none_when_not_run():
    rows = [{"width": 16, "method": m, "accuracy": a, "kv_tokens": kv, "time_proxy_mb": 1.0, "model_calls": 10.0}
            for m, a, kv in zip(search.METHODS, [0.6, 0.3, 0.5, 0.55, 0.5], [100, 50, 60, 70, 65])]
    got = search.weak_metrics(pd.DataFrame(rows), 16)
    assert got["weak_ets_accuracy_delta"] == -0.05 and got["weak_beam_lowest_accuracy"] == 1
    assert got["weak_no_coverage_accuracy_gain"] == -0.05 and got["weak_ets_kv_ratio"] == 0.7
    assert got["weak_uninformative_ets_accuracy_delta"] == 0 and got["weak_ets_accuracy"] == 0.55
    assert got["weak_claim_width"] == 16
    tied = search.weak_metrics(pd.DataFrame([r | {"accuracy": 1.0} for r in rows]), 16)  # the ceiling rule holds here too
    assert tied["weak_ets_accuracy_delta"] is None and tied["weak_uninformative_ets_accuracy_delta"] == 1
    off = search.weak_metrics(None, None)
    assert off["weak_ets_accuracy_delta"] is None and off["weak_beam_lowest_accuracy"] is None
    assert set(off) <= set(got)  # the keys a claim reads exist whether or not the regime ran


def test_params_errors_name_the_key():
    import yaml

    from shared.paths import CONF

    base = yaml.safe_load((CONF / "p24" / "base.yaml").read_text())
    base.pop("defaults", None)
    config.Params(**base)
    with pytest.raises(ValueError, match="claim_width: 32 must be one of widths"):
        config.Params(**(base | {"claim_width": 32}))
    with pytest.raises(ValueError, match=r"lambda_s: needs a value for every width, missing \[32\]"):
        config.Params(**(base | {"widths": [16, 32], "claim_width": 16}))
    with pytest.raises(ValueError, match="widths: every width must be >= 2"):
        config.Params(**(base | {"widths": [1, 64]}))
    with pytest.raises(ValueError, match=r"weak.claim_width: 64 must be one of weak.widths \[16\]"):
        config.Params(**(base | {"weak": {"policy": "small", "widths": [16], "claim_width": 64}}))
    with pytest.raises(ValueError, match=r"lambda_s: needs a value for every width, missing \[8\]"):
        config.Params(**(base | {"weak": {"policy": "small", "widths": [8], "claim_width": 8}}))
    assert config.Params(**(base | {"weak": None})).weak is None


def test_noisy_oracle_flips_a_share_of_labels_consistently():
    problems = reasoning.generate(200, 3, seed=7, modulus=7)
    texts = [reasoning.solution(p) for p in problems]
    exact = search.NoisyOracle(0.0).score_rows(problems, texts)
    assert all(s == [1.0] * 3 and a == 1.0 for s, a in exact)
    noisy = search.NoisyOracle(0.1, seed=3)
    rows = noisy.score_rows(problems, texts)
    labels = [v for s, a in rows for v in s + [a]]
    assert 0.06 < labels.count(0.0) / len(labels) < 0.14  # 800 labels, ~10 % flipped
    assert noisy.score_rows(problems, texts) == rows  # the same prefix always gets the same score
    prefix = ";".join(reasoning.split_steps(texts[0])[:1]) + ";"
    assert noisy.score_rows(problems[:1], [prefix])[0][0] == rows[0][0][:1] and noisy.score_rows(problems[:1], [prefix])[0][1] is None
    assert search.last_scores(noisy, problems[:2], texts[:2]) == [rows[0][1], rows[1][1]]
    with pytest.raises(ValueError, match="verifier_noise: must be in"):
        search.NoisyOracle(0.5)
