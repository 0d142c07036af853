"""Paper 35 (Mélange): the GPU types, their hourly prices, and tensor-parallel instances.

Devices are ``shared.servesim.DeviceSpec`` rooflines. L4, A100-80GB and H100 come from
``shared.servesim.DEVICES`` (NVIDIA datasheets); the A10G (AWS G5) is added here:

* A10G: 24 GB GDDR6, 600 GB/s, 150 W, 125 TFLOP/s bf16 tensor (dense). Sources: the AWS G5 table
  (24 GB per GPU; gist shashankprasanna/10ebe6dc1ba1d8d93db17da4e2cc890e, "EC2 GPU instances"), a
  public GPU catalogue (huggingface.co/RajBhope/gpu-runtime-predictor, gpu_catalog.json: A10G 600 GB/s,
  31.2 FP32 TFLOP/s, 150 W; its "62.5 fp16" is the non-tensor rate, 2 x FP32) and NVIDIA's A10 datasheet
  (the same GA102 chip: 125 TFLOP/s dense bf16/fp16 tensor). AWS does not publish the A10G's tensor
  rate; taking the A10's is an assumption (README).

Prices (USD per GPU-hour, on demand) are in :data:`PRICES` with their sources: A10G 1.01 and
A100-80GB 3.67 are the authors' own (melange-release ``melange/config/example.json``); L4 0.70 and
H100 7.5 are the planning notes' values, NOT verified against the paper's table (public listings
seen: AWS g6.xlarge (L4) about 0.81, AWS H100 about 8.22 per GPU-hour); the results depend on
them, which is why they are parameters.

A Llama-2-70B replica needs several GPUs of a type (tensor parallelism). :func:`instance` builds
one replica of ``tp`` GPUs: FLOP/s, bandwidth and memory times ``tp``, price times ``tp``, and
:class:`TPStepModel` adds the two all-reduces per layer of Megatron-style TP (alpha-beta: a latency
per collective plus the ring's 2(tp-1)/tp of the activations over the link).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared import servesim as S

A10G = S.DeviceSpec("A10G", 125e12, 600e9, 24e9, 150.0)
GPUS = {"L4": S.DEVICES["L4"], "A10G": A10G, "A100": S.DEVICES["A100-80GB"], "H100": S.DEVICES["H100-SXM"]}
FAST = ("A100", "H100")  # the high-end types of the SLO claim

# (USD per GPU-hour, source)
PRICES = {
    "L4": (0.70, "planning notes (unverified; AWS g6.xlarge lists about 0.81)"),
    "A10G": (1.01, "melange-release melange/config/example.json (authors)"),
    "A100": (3.67, "melange-release melange/config/example.json (authors)"),
    "H100": (7.5, "planning notes (unverified; AWS lists about 8.22 per H100-hour)"),
}

# interconnect of a tensor-parallel replica: (bandwidth B/s per direction, latency s per collective)
LINKS = {"L4": (32e9, 20e-6), "A10G": (32e9, 20e-6),  # PCIe 4.0 x16, no NVLink
         "A100": (300e9, 8e-6), "H100": (450e9, 8e-6)}  # NVLink 3 (600 GB/s bidir.) / NVLink 4 (900 GB/s)

MODELS = {"llama2-7b": S.LLAMA2_7B, "llama2-70b": S.LLAMA2_70B}


@dataclass(frozen=True)
class TPStepModel(S.StepModel):
    """A StepModel on a ``tp``-GPU replica: the roofline of the aggregate device plus, per iteration,
    two all-reduces per layer of the batch's activations (tokens x d_model x 2 bytes)."""

    tp: int = 1
    link_bandwidth: float = 32e9
    link_latency_s: float = 20e-6

    def seconds(self, prefill_tokens, prefill_pairs, decode_seqs, decode_context):
        busy = super().seconds(prefill_tokens, prefill_pairs, decode_seqs, decode_context)
        if self.tp == 1:
            return busy
        tokens = np.asarray(prefill_tokens, dtype=np.float64) + decode_seqs
        nbytes = tokens * self.shape.d_model * 2.0
        per_collective = self.link_latency_s + 2 * (self.tp - 1) / self.tp * nbytes / self.link_bandwidth
        return busy + 2 * self.shape.n_layers * per_collective


def instance(gpu: str, model: str, tp: int = 1, mfu: float = 0.6, mbu: float = 0.8,
             overhead_s: float = 0.0) -> TPStepModel:
    """One replica of ``model`` on ``tp`` GPUs of type ``gpu``."""
    if gpu not in GPUS:
        raise ValueError(f"instance: gpu={gpu!r} is not one of {', '.join(GPUS)}")
    if model not in MODELS:
        raise ValueError(f"instance: model={model!r} is not one of {', '.join(MODELS)}")
    if tp < 1:
        raise ValueError(f"instance: tp must be >= 1, got {tp}")
    d = GPUS[gpu]
    dev = S.DeviceSpec(f"{tp}x{gpu}" if tp > 1 else gpu, d.flops * tp, d.bandwidth * tp, d.memory * tp, d.tdp_w * tp)
    bw, lat = LINKS[gpu]
    return TPStepModel(MODELS[model], dev, mfu, mbu, overhead_s, tp=tp, link_bandwidth=bw, link_latency_s=lat)


def min_tp(gpu: str, model: str, min_kv_tokens: int, max_tp: int = 8) -> int | None:
    """Smallest power-of-two ``tp`` whose replica holds the weights and ``min_kv_tokens`` of KV cache
    (None if not even ``max_tp`` GPUs do)."""
    tp = 1
    while tp <= max_tp:
        try:
            if instance(gpu, model, tp).kv_capacity_tokens() >= min_kv_tokens:
                return tp
        except ValueError:  # the weights alone do not fit
            pass
        tp *= 2
    return None


def price(gpu: str, prices: dict[str, float] | None = None) -> float:
    """USD per GPU-hour (``prices`` overrides the table)."""
    if prices and gpu in prices:
        return float(prices[gpu])
    return PRICES[gpu][0]
