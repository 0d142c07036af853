"""Paper 35 (Mélange): the workloads as request-size distributions over the profile buckets.

``short`` is Arena-like (chat: short prompts, medium answers), ``long`` PubMed-like (a long article
in, an abstract out), ``mixed`` draws 80 % short and 20 % long (the blog's ``Mixed_80_20``); all three
are lognormal with the means given in the config (our assumption of the datasets' shapes, not the
datasets: neither Chatbot Arena nor PubMed is read here). ``conv`` and ``code`` sample the real Azure
LLM inference traces 2023 (shared.servesim.Trace.azure, CC-BY-4.0). Lengths are clipped into the
buckets' range (Llama 2's 4K context).
"""

from __future__ import annotations

import math

import numpy as np

from shared import servesim as S

WORKLOADS = ("short", "long", "mixed", "conv", "code")


def _lognormal(rng, mean: float, sigma: float, n: int) -> np.ndarray:
    return rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, n)  # E = mean


def sample(name: str, n: int, seed: int, short: tuple[float, float, float], long: tuple[float, float, float],
           mixed_long_share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) lengths of workload ``name``; ``short``/``long`` = (prompt mean, output
    mean, sigma)."""
    rng = np.random.default_rng(seed)
    if name in ("conv", "code"):
        trace = S.Trace.azure(name)
        pick = rng.choice(len(trace), size=n, replace=n > len(trace))
        return trace.prompt[pick].astype(float), trace.output[pick].astype(float)

    def draw(spec, k):
        p_mean, o_mean, sigma = spec
        return _lognormal(rng, p_mean, sigma, k), _lognormal(rng, o_mean, sigma, k)

    if name == "short":
        return draw(short, n)
    if name == "long":
        return draw(long, n)
    if name == "mixed":
        is_long = rng.random(n) < mixed_long_share
        (sp, so), (lp, lo) = draw(short, n), draw(long, n)
        return np.where(is_long, lp, sp), np.where(is_long, lo, so)
    raise ValueError(f"workloads.sample name={name!r} is not allowed; allowed: {', '.join(WORKLOADS)}")


def bucket_shares(prompt: np.ndarray, output: np.ndarray, input_edges: list[int], output_edges: list[int]) -> np.ndarray:
    """Share of requests per bucket (input-major, as profile.buckets), lengths clipped into the edges."""
    p = np.clip(np.rint(prompt), input_edges[0] + 1, input_edges[-1])
    o = np.clip(np.rint(output), output_edges[0] + 1, output_edges[-1])
    i = np.searchsorted(input_edges, p, side="left") - 1  # (lo, hi]
    j = np.searchsorted(output_edges, o, side="left") - 1
    counts = np.bincount(i * (len(output_edges) - 1) + j, minlength=(len(input_edges) - 1) * (len(output_edges) - 1))
    return counts / counts.sum()
