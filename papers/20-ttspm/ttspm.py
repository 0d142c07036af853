"""TTSPM, the Test-Time Scaling Performance Model (Wang et al. 2025), and its estimation from samples.

**The model.** Parallel scaling draws N independent candidates, each correct with probability
p (per problem): the chance that at least one is correct is ``Hit@N = 1 - (1 - p)^N``.
Sequential scaling rethinks: the first attempt is correct with probability p0, a rethink of a
wrong answer fixes it with probability p_r, and a correct answer stays correct (an absorbing
state), so after N attempts (1 + N - 1 rethinks) ``F(N) = 1 - (1 - p0)(1 - p_r)^(N-1)``.
Both are one form, ``upper_bound(first, p, N)``; parallel is ``first = p``.

**Saturation.** The marginal gain of attempt N + 1 is ``F(N+1) - F(N) = (1 - first) p (1 - p)^(N-1)``
(``p (1 - p)^N`` for parallel), falling geometrically; the saturation point for a tolerance ε
is the smallest budget N >= 1 whose next unit gains at most ε,
``N* = max(1, 1 + ceil(ln(ε / ((1 - first) p)) / ln(1 - p)))`` — for parallel
``ceil(ln(ε / p) / ln(1 - p))``, the same expression for both paradigms (the paper's "unified
upper-bound structure"). The indexing and ε convention are ours (derived from the form; the
paper's exact statement was not readable offline).

**Estimation.** p per problem from pilot samples (plug-in c / n, or an empirical-Bayes
beta-binomial posterior that does not predict 0 forever for a problem whose pilot missed);
observed Hit@N from fresh samples with the unbiased pass@k estimator; sequential rates from
the correctness trajectories of ``shared.reasoning.revise``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


# ----------------------------------------------------------------------------- the model
def upper_bound(first, p, n):
    """F(N) = 1 - (1 - first)(1 - p)^(N-1): accuracy after N attempts (parallel: first = p)."""
    first, p, n = np.asarray(first, float), np.asarray(p, float), np.asarray(n, float)
    return 1.0 - (1.0 - first) * (1.0 - p) ** (n - 1)


def hit_at_n(p, n):
    """Parallel scaling: P(at least one of N independent candidates is correct) = 1 - (1 - p)^N."""
    return upper_bound(p, p, n)


def marginal_gain(first, p, n):
    """F(N + 1) - F(N) = (1 - first) p (1 - p)^(N-1): what attempt N + 1 adds."""
    first, p, n = np.asarray(first, float), np.asarray(p, float), np.asarray(n, float)
    return (1.0 - first) * p * (1.0 - p) ** (n - 1)


def saturation_point(first: float, p: float, eps: float) -> int:
    """The smallest N >= 1 with marginal_gain(first, p, N) <= eps (parallel: first = p).

    Closed form ``1 + ceil(ln(eps / ((1 - first) p)) / ln(1 - p))``, clipped at 1 and made exact
    at integer boundaries. p <= 0 (nothing to gain) or first >= 1 (nothing left) give 1."""
    if not 0 < eps < 1:
        raise ValueError(f"eps: must be in (0, 1), got {eps}")
    if not (0 <= first <= 1 and 0 <= p <= 1):
        raise ValueError(f"first, p: probabilities in [0, 1], got first={first}, p={p}")
    amplitude = (1.0 - first) * p
    if amplitude <= eps:
        return 1
    if p >= 1:
        return 2  # attempt 2 gains 1 - first > eps, attempt 3 gains nothing
    n = max(1, 1 + math.ceil(math.log(eps / amplitude) / math.log1p(-p)))
    while n > 1 and marginal_gain(first, p, n - 1) <= eps:  # float rounding at the boundary
        n -= 1
    while marginal_gain(first, p, n) > eps:
        n += 1
    return n


def saturation_points(first: Sequence[float], p: Sequence[float], eps: float) -> np.ndarray:
    """:func:`saturation_point` per problem."""
    return np.array([saturation_point(float(f), float(q), eps) for f, q in zip(first, p)], dtype=int)


# ----------------------------------------------------------------------------- parallel: estimation
def pass_at_k(n: int, c: int, ks: Sequence[int]) -> np.ndarray:
    """Unbiased estimate of Hit@k from c correct of n samples: 1 - C(n-c, k) / C(n, k), per k."""
    if not 0 <= c <= n:
        raise ValueError(f"c: must be in [0, n={n}], got {c}")
    ks = np.asarray(ks, int)
    if ks.size and (ks.min() < 1 or ks.max() > n):
        raise ValueError(f"ks: must be in [1, n={n}], got {ks.min()}..{ks.max()}")
    j = np.arange(n)
    ratio = np.clip((n - c - j) / (n - j), 0.0, None)  # P(the (j+1)-th draw without replacement is wrong | all before were)
    miss = np.concatenate([[1.0], np.cumprod(ratio)])
    return 1.0 - miss[ks]


def observed_curves(correct: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """(problems, len(ks)) unbiased Hit@k of a (problems, n) boolean matrix of fresh samples."""
    correct = np.asarray(correct, bool)
    n = correct.shape[1]
    return np.stack([pass_at_k(n, int(c), ks) for c in correct.sum(1)])


def observed_saturation(curve: np.ndarray, eps: float) -> int:
    """The smallest N (1-based, curve[N-1] = Hit@N for N = 1..n) with Hit@(N+1) - Hit@N <= eps;
    n when no step of the curve is that small (censored at the sample budget)."""
    gains = np.diff(np.asarray(curve, float))
    below = np.nonzero(gains <= eps)[0]
    return int(below[0]) + 1 if below.size else len(curve)


def fit_beta_binomial(c: Sequence[int], n: int) -> tuple[float, float]:
    """Empirical-Bayes prior Beta(a, b) of the per-problem p: maximum likelihood of the
    beta-binomial over problems (c correct of n each)."""
    from scipy.optimize import minimize
    from scipy.special import betaln

    c = np.asarray(c, float)
    if c.size == 0:
        raise ValueError("c: needs at least one problem")
    if np.all(c == 0) or np.all(c == n):
        raise ValueError(f"c: every problem has {int(c[0])} of {n} correct; a beta-binomial prior needs variation")

    def nll(theta):
        a, b = np.exp(theta)
        return -float(np.sum(betaln(c + a, n - c + b) - betaln(a, b)))

    m = float(np.clip(c.mean() / n, 1e-3, 1 - 1e-3))
    res = minimize(nll, x0=np.log([m * 2.0, (1 - m) * 2.0]), method="Nelder-Mead",
                   options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    a, b = np.exp(res.x)
    return float(a), float(b)


def posterior_hit(c: Sequence[int], n: int, a: float, b: float, ns: Sequence[int]) -> np.ndarray:
    """(problems, len(ns)) E[1 - (1 - p)^N] under the posterior Beta(a + c, b + n - c) of each problem."""
    from scipy.special import betaln

    c = np.asarray(c, float)[:, None]
    ns = np.asarray(ns, float)[None, :]
    return 1.0 - np.exp(betaln(a + c, b + n - c + ns) - betaln(a + c, b + n - c))


def posterior_saturation(c: Sequence[int], n: int, a: float, b: float, eps: float, max_n: int = 100_000) -> np.ndarray:
    """Per problem, the smallest N >= 1 whose expected marginal gain under the posterior
    Beta(a + c, b + n - c), E[p (1 - p)^N], is at most eps (max_n when none is)."""
    from scipy.special import betaln

    if not 0 < eps < 1:
        raise ValueError(f"eps: must be in (0, 1), got {eps}")
    c = np.asarray(c, float)[:, None]
    ns = np.arange(1, max_n + 1, dtype=float)[None, :]
    gain = np.exp(betaln(a + c + 1, b + n - c + ns) - betaln(a + c, b + n - c))
    below = gain <= eps
    return np.where(below.any(1), below.argmax(1) + 1, max_n)


# ----------------------------------------------------------------------------- sequential: estimation
def trajectories(attempts: Sequence[Sequence[bool]], rounds: int) -> np.ndarray:
    """(problems, rounds + 1) correctness after each round, from the per-problem correctness of
    ``revise``'s attempts (an attempt the verifier trusted is kept for every later round)."""
    out = np.zeros((len(attempts), rounds + 1), bool)
    for i, row in enumerate(attempts):
        if not row:
            raise ValueError(f"attempts: problem {i} has no attempt")
        if len(row) > rounds + 1:
            raise ValueError(f"attempts: problem {i} has {len(row)} attempts, more than rounds + 1 = {rounds + 1}")
        out[i] = list(row) + [row[-1]] * (rounds + 1 - len(row))
    return out


def rethink_rates(traj: np.ndarray) -> dict[str, float]:
    """The chain's rates, pooled over problems and rounds: p0 (first attempt correct), p_rethink
    (wrong -> correct in one round; the maximum-likelihood rate of the geometric model) and
    p_relapse (correct -> wrong: what the model's absorbing state assumes is 0)."""
    traj = np.asarray(traj, bool)
    prev, nxt = traj[:, :-1], traj[:, 1:]
    wrong, right = ~prev, prev
    return {"p0": float(traj[:, 0].mean()),
            "p_rethink": float((wrong & nxt).sum() / wrong.sum()) if wrong.any() else float("nan"),
            "p_relapse": float((right & ~nxt).sum() / right.sum()) if right.any() else float("nan"),
            "wrong_transitions": int(wrong.sum())}


def per_problem_rates(traj: np.ndarray, replicas: int, pooled_rethink: float) -> tuple[np.ndarray, np.ndarray]:
    """(p0_i, p_rethink_i) per problem from ``replicas`` trajectories each (rows problem-major);
    a problem never wrong in the pilot gets the pooled p_rethink (it is not used: p0_i = 1)."""
    traj = np.asarray(traj, bool)
    if traj.shape[0] % replicas:
        raise ValueError(f"replicas: {traj.shape[0]} trajectories are not a multiple of {replicas}")
    t = traj.reshape(-1, replicas, traj.shape[1])
    wrong = ~t[:, :, :-1]
    fixed = (wrong & t[:, :, 1:]).sum((1, 2))
    tries = wrong.sum((1, 2))
    p_r = np.where(tries > 0, fixed / np.maximum(tries, 1), pooled_rethink)
    return t[:, :, 0].mean(1), p_r


def mae(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a, float) - np.asarray(b, float))))
