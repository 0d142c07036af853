"""NanoFlow's cost model (Sec. 3): what one serving iteration of a dense batch costs on a
tensor-parallel group, in compute, memory and network time, and the optimal throughput.

One iteration processes ``dense_batch`` tokens: prefill tokens of new requests and one decode
token of each running request. In steady state with prompts of ``prompt`` tokens and outputs of
``output`` tokens, a share output / (prompt + output) of the dense tokens are decode tokens, and
each decoding request holds on average prompt + output / 2 tokens of KV cache.

* ``T_comp`` — FLOPs of the batch over the group's FLOP/s (2 per active parameter per token, plus
  attention's (query, key) pairs): :class:`shared.servesim.StepModel` with infinite bandwidth.
* ``T_mem`` — the weights once plus the KV cache read (and written) over the group's bandwidth:
  the same StepModel with infinite FLOP/s. ``T_kv`` is its KV part (decode attention, the
  memory-bound operation of the pipeline); the weight bytes are read by the GEMMs, which are
  compute-bound at these batches.
* ``T_net`` — tensor parallelism: two collectives per layer (after the attention output
  projection and after the FFN down projection), each a ring all-reduce (reduce-scatter +
  all-gather, what NanoFlow runs) of the batch's activations, ``shared.distributed.Link``.

The workload is compute-bound when ``T_comp`` is the largest; then the best any engine can do
is to keep the FLOP units busy: ``optimal = n_gpu * FLOPS / (2 * active parameters)`` tokens/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from shared import servesim as S
from shared.distributed import Link


@dataclass(frozen=True)
class ServedModel:
    """A model as served: its shape (total parameters: memory), the parameters one token
    activates (compute; fewer than the total for a mixture of experts), the tensor-parallel degree."""

    shape: S.ModelShape
    active_params: float
    n_gpu: int

    def __post_init__(self):
        if not (0 < self.active_params <= self.shape.n_params):
            raise ValueError(f"ServedModel {self.shape.name}: active_params must be in (0, n_params], got {self.active_params}")
        if self.n_gpu < 1:
            raise ValueError(f"ServedModel {self.shape.name}: n_gpu must be >= 1, got {self.n_gpu}")


# The models NanoFlow was ported to (its README, "Feasibility"), from their public configs.
# Tensor-parallel degree: 8 (one 8xA100 node) for the large ones, 1 for LLaMA-3-8B.
MODELS = {
    "llama2-70b": ServedModel(S.LLAMA2_70B, S.LLAMA2_70B.n_params, 8),
    "qwen2-72b": ServedModel(S.ModelShape("Qwen2-72B", 72.7e9, 80, 8192, 1024), 72.7e9, 8),
    "deepseek-67b": ServedModel(S.ModelShape("DeepSeek-67B", 67.4e9, 95, 8192, 1024), 67.4e9, 8),
    "mixtral-8x7b": ServedModel(S.ModelShape("Mixtral-8x7B", 46.7e9, 32, 4096, 1024), 12.9e9, 8),
    "llama3-8b": ServedModel(S.ModelShape("LLaMA-3-8B", 8.03e9, 32, 4096, 1024), 8.03e9, 1),
}


@dataclass(frozen=True)
class Workload:
    """Steady-state iterations of ``dense_batch`` tokens for requests of ``prompt`` in / ``output`` out."""

    prompt: float
    output: float
    dense_batch: int
    name: str = ""

    def __post_init__(self):
        if not (self.prompt >= 1 and self.output >= 1 and self.dense_batch >= 1):
            raise ValueError(f"Workload {self.name or ''}: prompt, output and dense_batch must be >= 1, "
                             f"got {self.prompt}, {self.output}, {self.dense_batch}")

    @property
    def label(self) -> str:
        return self.name or f"{self.prompt:g}/{self.output:g}"

    def mix(self) -> tuple[float, float, float, float]:
        """(prefill tokens, prefill (query, key) pairs, decoding sequences, their cached tokens)."""
        decode = self.dense_batch * self.output / (self.prompt + self.output)
        prefill = self.dense_batch - decode
        pairs = prefill * (self.prompt + 1) / 2  # prefill / prompt prompts, each prompt (prompt + 1) / 2 pairs
        return prefill, pairs, decode, decode * (self.prompt + self.output / 2)


def group_device(device: S.DeviceSpec, n_gpu: int) -> S.DeviceSpec:
    """A tensor-parallel group of ``n_gpu`` devices as one device (FLOP/s, bandwidth, memory summed)."""
    return S.DeviceSpec(f"{n_gpu}x{device.name}", device.flops * n_gpu, device.bandwidth * n_gpu,
                        device.memory * n_gpu, device.tdp_w * n_gpu)


def optimal_throughput(model: ServedModel, device: S.DeviceSpec) -> float:
    """Tokens/s when the FLOP units do nothing but the 2 FLOPs per active parameter per token."""
    return model.n_gpu * device.flops / (2.0 * model.active_params)


def collective_seconds(model: ServedModel, tokens: float, link: Link, bytes_per_act: float = 2.0) -> float:
    """One tensor-parallel collective of ``tokens`` activations of width d_model (ring all-reduce)."""
    return link.all_reduce_seconds(tokens * model.shape.d_model * bytes_per_act, model.n_gpu)


def iteration_costs(model: ServedModel, work: Workload, device: S.DeviceSpec, link: Link,
                    mfu: float = 1.0, mbu: float = 1.0) -> dict[str, float]:
    """Seconds of one iteration by resource (at ``mfu``/``mbu`` of peak; 1: the ideal roofline).
    ``link`` is one GPU's share of the interconnect (its efficiency folded into the bandwidth)."""
    group = group_device(device, model.n_gpu)
    mix = work.mix()
    compute_only = S.StepModel(replace(model.shape, n_params=model.active_params),
                               replace(group, bandwidth=math.inf), mfu=mfu)
    memory_only = S.StepModel(model.shape, replace(group, flops=math.inf), mbu=mbu)
    t_comp = float(compute_only.seconds(*mix))
    t_mem = float(memory_only.seconds(*mix))
    t_weights = float(memory_only.seconds(0, 0, 0, 0))
    t_net = 2 * model.shape.n_layers * collective_seconds(model, work.dense_batch, link)
    kv_tokens = mix[3] + work.dense_batch
    return {"t_comp": t_comp, "t_mem": t_mem, "t_weights": t_weights, "t_kv": t_mem - t_weights, "t_net": t_net,
            "kv_gb": kv_tokens * model.shape.kv_bytes_per_token / 1e9,
            "kv_fits": bool(kv_tokens <= S.StepModel(model.shape, group).kv_capacity_tokens())}


def fitting_batch(model: ServedModel, work: Workload, device: S.DeviceSpec, step: int = 128) -> Workload:
    """``work`` with the largest dense batch (a multiple of ``step``, at most its own) whose KV cache
    fits beside the weights on the group (NanoFlow sizes its batch by memory the same way)."""
    capacity = S.StepModel(model.shape, group_device(device, model.n_gpu)).kv_capacity_tokens()
    per_token = work.output / (work.prompt + work.output) * (work.prompt + work.output / 2) + 1  # KV tokens per dense token
    batch = min(work.dense_batch, int(capacity / per_token) // step * step)
    if batch < 1:
        raise ValueError(f"{model.shape.name}: no dense batch of {step} tokens fits {work.label} on {model.n_gpu}x{device.name}")
    return replace(work, dense_batch=batch)


def bound_by(costs: dict[str, float]) -> str:
    """'compute', 'memory' or 'network': the resource with the largest time."""
    return max((("compute", costs["t_comp"]), ("memory", costs["t_mem"]), ("network", costs["t_net"])),
               key=lambda kv: kv[1])[0]
