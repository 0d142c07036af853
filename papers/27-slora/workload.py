"""S-LoRA's synthetic workload, our adapters, and the paper's raw results (data/*.jsonl).

The trace follows the generator of the S-LoRA benchmarks (Sec. 7.1 of the paper): ``n_requests``
requests; inter-arrival times Gamma-distributed with mean 1/req_rate and coefficient of
variation ``cv`` (shape 1/cv^2, scale cv^2/req_rate; cv = 1 is Poisson); input and output
lengths uniform in ``input_range`` / ``output_range``; the adapter of a request drawn from a
power law of exponent ``alpha`` over the adapter indices. Two readings of "power law":

- ``popularity="slora"``: what the authors' trace generator does: ``floor(N * u)`` with u drawn
  from the power-function density ``alpha * u^(alpha-1)`` on [0, 1]; at the paper's alpha = 1
  that is UNIFORM over adapters (every adapter equally popular).
- ``popularity="zipf"``: P(adapter k) proportional to (k+1)^-alpha (a few adapters take most requests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Request:
    rid: int
    adapter: str  # adapter name ("lora_<k>")
    prompt: tuple[int, ...]  # prompt token ids
    output_len: int  # tokens to generate (EOS ignored, as the paper's benchmarks)
    arrival: float  # seconds from the trace's start

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)


def adapter_name(k: int) -> str:
    return f"lora_{k}"


def trace(
    n_adapters: int, n_requests: int, req_rate: float, cv: float, alpha: float, input_range: tuple[int, int],
    output_range: tuple[int, int], vocab_size: int, seed: int = 0, popularity: str = "slora",
) -> list[Request]:  # fmt: skip
    """The synthetic trace (lengths inclusive of both ends of the ranges)."""
    if n_adapters < 1 or n_requests < 1 or req_rate <= 0 or cv <= 0 or alpha <= 0:
        raise ValueError(
            f"trace: n_adapters, n_requests >= 1 and req_rate, cv, alpha > 0 needed, got "
            f"{n_adapters}, {n_requests}, {req_rate}, {cv}, {alpha}"
        )
    rng = np.random.default_rng(seed)
    if popularity == "slora":
        ks = np.minimum((rng.power(alpha, n_requests) * n_adapters).astype(int), n_adapters - 1)
    elif popularity == "zipf":
        w = np.arange(1, n_adapters + 1, dtype=float) ** -alpha
        ks = rng.choice(n_adapters, size=n_requests, p=w / w.sum())
    else:
        raise ValueError(f"popularity: 'slora' or 'zipf', got {popularity!r}")
    ins = rng.integers(input_range[0], input_range[1] + 1, n_requests)
    outs = rng.integers(output_range[0], output_range[1] + 1, n_requests)
    arrivals = np.cumsum(rng.gamma(1 / cv**2, cv**2 / req_rate, n_requests))
    return [
        Request(i, adapter_name(int(ks[i])), tuple(int(t) for t in rng.integers(0, vocab_size, ins[i])), int(outs[i]),
                float(arrivals[i]))
        for i in range(n_requests)
    ]  # fmt: skip


def adapter_ranks(n_adapters: int, ranks: list[int]) -> list[int]:
    """Rank of adapter k: ``ranks`` cycled (S2: 64, 32, 16, 8, 64, ...; S1: [8])."""
    return [ranks[k % len(ranks)] for k in range(n_adapters)]


def make_store(model, n_adapters: int, ranks: list[int], targets: list[str], lora_alpha: float, seed: int = 0,
               init_std: float = 0.02, device_capacity: int = 64, dtype=None):  # fmt: skip
    """An AdapterStore of ``n_adapters`` random LoRA adapters on every ``targets`` linear of ``model``
    (module names ending in one of them); A ~ N(0, 1/in), B ~ N(0, init_std): a visible change of
    the output (a freshly initialised LoRA has B = 0 and would change nothing). Drawn in float32
    and kept in ``dtype`` (default: the model's; host memory: a bf16 7B adapter of rank 64 on q, k,
    v, o is 63 MB, twice that in float32). Adapter k depends only on the seed and k: the first n
    adapters of a store of N > n are the store of n (see :func:`first_adapters`)."""
    import torch

    from shared.multilora import AdapterStore

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    if not linears:
        raise ValueError(f"lora_targets: no linear of the model is named {targets}")
    dtype = next(model.parameters()).dtype if dtype is None else dtype
    gen = torch.Generator().manual_seed(seed)
    store = AdapterStore(device_capacity=device_capacity)
    for k, r in enumerate(adapter_ranks(n_adapters, ranks)):
        weights = {}
        for name, lin in linears:
            A = torch.randn(r, lin.in_features, generator=gen) / lin.in_features**0.5
            B = torch.randn(lin.out_features, r, generator=gen) * init_std
            weights[name] = (A.to(dtype), B.to(dtype), lora_alpha / r)
        store.add(adapter_name(k), weights)
    return store


def first_adapters(store, n: int):
    """A store of the first ``n`` adapters of ``store`` (the same tensors, no copy): the stores of
    smaller N are built from one store of the largest N."""
    from shared.multilora import AdapterStore

    if not 1 <= n <= len(store):
        raise ValueError(f"n_adapters: need 1 <= n <= {len(store)} (the store's adapters), got {n}")
    sub = AdapterStore(device_capacity=store.device_capacity)
    for name in store.names[:n]:
        sub.add(name, store[name])
    return sub


# ----------------------------------------------------------------------------- the paper's raw results
PAPER_FILES = {
    ("S1", "slora"): "synthetic_num_adapters_a100-80_S1_slora_table.jsonl",
    ("S2", "slora"): "synthetic_num_adapters_a100-80_S2_slora_table.jsonl",
    ("S4", "slora"): "synthetic_num_adapters_a100-80_S4_slora_table.jsonl",
    ("S1", "peft"): "num_adapter_a100-80_S1_peft_fig3.jsonl",
    ("S2", "peft"): "num_adapter_a100-80_S2_peft_fig3.jsonl",
    ("S4", "peft"): "num_adapter_a100-80_S4_peft_fig3.jsonl",
    ("S2", "vllm-packed"): "synthetic_num_adapters_a100-80_S2_vllm.jsonl",
    ("S3", "vllm-packed"): "synthetic_num_adapters_a100-80_S3_vllm.jsonl",
}


def paper_results(data: Path = DATA) -> pd.DataFrame:
    """Every run of the copied jsonl files: setting, system, n_adapters, req_rate, duration, throughput,
    avg_latency, avg_first_token_latency, avg_attainment (lines that are not JSON are notes: skipped)."""
    rows = []
    for (setting, system), name in PAPER_FILES.items():
        for line in (data / name).read_text().splitlines():
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            c, r = rec["config"], rec["result"]
            rows.append(dict(
                setting=setting, system=system, n_adapters=c["num_adapters"], req_rate=c["req_rate"],
                duration=c["duration"], alpha=c["alpha"], cv=c["cv"], throughput=r["throughput"],
                avg_latency=r["avg_latency"], avg_first_token_latency=r["avg_first_token_latency"],
                avg_attainment=r["avg_attainment"], file=name,
            ))  # fmt: skip
    return pd.DataFrame(rows).sort_values(["setting", "system", "n_adapters"], ignore_index=True)
