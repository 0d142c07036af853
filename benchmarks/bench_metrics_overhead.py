"""How much shared.metrics adds to the time of what it measures (goal: < 2%).

The workload is a real one of the size the papers measure on CPU: the forward pass of an
8M-parameter LlamaForCausalLM (6 layers, d=256, GQA 8/4 heads) on 1 x 512 tokens, about
0.08 s with one thread on an idle core (longer when other processes share the cores). It
is timed bare and inside the harness, interleaved round-robin (shared.timing.benchmark,
one torch thread: the sampler thread then has a core of its own on a 2-core machine, as it
would beside a pinned workload):

- ``MemorySampler``: the sampler thread reading RSS every `metrics.SAMPLE_INTERVAL_S`,
  plus entry and exit;
- ``measure(repeats=1)``: everything `measure` does per call: the sampler, the energy meter
  (here the estimate: this machine has no readable RAPL), percentiles, the dataclass.
  ``repeats=1`` is the worst case, since entry and exit are paid once per call.

"ours" is the wrapped time and the peer the bare call (medians), so ratio_vs_peer =
bare / wrapped (1.0 = no overhead; 0.98 = 2% overhead); ``overhead_pct`` is the median of
the per-round ratios, which the load of other processes moves less (see `_paired`).
"""

from __future__ import annotations

import numpy as np
import torch

from shared import metrics
from shared.timing import benchmark

REPEATS, WARMUP = 60, 3  # ~15 s at 80 ms a call
SEQ_LEN = 512


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=SEQ_LEN,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def run() -> list[dict]:
    model = _model()
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, model.config.vocab_size, (1, SEQ_LEN), generator=torch.Generator().manual_seed(0))

    def forward():
        with torch.inference_mode():
            model(input_ids=ids)

    def sampled():
        with metrics.MemorySampler():
            forward()

    def measured():
        metrics.measure(forward, repeats=1, warmup=0)

    stats = benchmark(
        {"bare": forward, "MemorySampler": sampled, "measure": measured},
        repeats=REPEATS,
        warmup=WARMUP,
        num_threads=1,
    )
    bare = stats["bare"]
    spread = 100 * bare.iqr_s / bare.median_s
    records = []
    interval = f"{metrics.SAMPLE_INTERVAL_S * 1e3:g} ms"
    for key, label in (("MemorySampler", f"MemorySampler({interval})"), ("measure", "measure(repeats=1)")):
        wrapped = stats[key]
        paired = _paired(bare, wrapped)
        of_medians = 100 * (wrapped.median_s / bare.median_s - 1)
        records.append(
            {
                "name": (
                    f"metrics overhead: {label} around a {n_params / 1e6:.1f}M-param Llama forward "
                    f"(1x{SEQ_LEN} tokens, 1 thread): {paired:+.2f}% per round, {of_medians:+.2f}% of medians "
                    f"(bare IQR {spread:.0f}% of its median: a shared machine)"
                ),
                "ours": wrapped.median_s,
                "peer": "bare call (same workload, interleaved)",
                "peer_value": bare.median_s,
                "unit": "s",
                "lower_is_better": True,
                "overhead_pct": round(paired, 3),
                "overhead_pct_of_medians": round(of_medians, 3),
            }
        )
    return records


def _paired(bare, wrapped) -> float:
    """The headline: median over rounds of wrapped / bare - 1, in %. The two calls of one
    round ran back to back, so a slow phase of a shared machine (other processes taking
    the cores for a while) slows both and cancels in their ratio; the ratio of the two
    medians can still carry it when the phases fall unevenly."""
    b, w = np.asarray(bare.samples_s), np.asarray(wrapped.samples_s)
    return float(100 * (np.median(w / b) - 1))


if __name__ == "__main__":
    for record in run():
        print(record["name"], record["ours"], record["peer_value"])
