"""Exact complexity of a torch model: flops, parameters and activations.

The three measures follow Radosavovic et al. 2020 ("Designing Network Design Spaces") and
Dollár et al. 2021 ("Fast and Accurate Model Scaling"), as in their code (pycls):

- flops: multiply-adds. One multiply-add counts as ONE flop, as in those papers (and most
  vision papers). ``torch.utils.flop_counter`` counts a multiply-add as two floating-point
  operations, so we halve its total. Only the operations it knows are counted (matrix
  products, convolutions, attention); normalisation, activation functions, pooling and
  residual additions are free, as in the papers.
- params: number of elements of all parameters (buffers such as BatchNorm running
  statistics are not parameters).
- activations: number of elements of the output tensors of the layers that carry weights.
  The papers define it as "the size of the output tensors of all conv layers"; by default we
  also count ``nn.Linear`` outputs (pycls does too; for a CNN the classifier adds a few
  elements, for a transformer the linear layers are the whole story).

All three are counted by running ONE real forward pass on a zero input of the given shape,
so they hold for any ``nn.Module`` whose cost does not depend on the input values. The
batch dimension is part of the shape: pass batch 1 for per-example numbers, as the papers
report them. The model may live on any device, including ``meta`` (shapes only, no compute).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Layers whose output tensors count as activations (see the module docstring).
ACTIVATION_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


@dataclass(frozen=True)
class Complexity:
    flops: int  # multiply-adds of one forward pass (1 multiply-add = 1 flop)
    params: int  # elements of all parameters
    activations: int  # elements of all conv/linear outputs of one forward pass

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters are counted once)."""
    return sum(p.numel() for p in model.parameters())


def _example_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A zero tensor on the model's device, in its floating dtype."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return torch.zeros(tuple(input_shape), device=device, dtype=dtype)


def count(
    model: nn.Module,
    input_shape: tuple[int, ...],
    layer_types: tuple[type[nn.Module], ...] = ACTIVATION_LAYERS,
) -> Complexity:
    """Flops (multiply-adds), parameters and activations of ``model`` on an input of
    ``input_shape`` (batch included), from one forward pass in eval mode."""
    if len(input_shape) < 2 or any(int(n) <= 0 for n in input_shape):
        raise ValueError(f"input_shape: need (batch, ...) with positive sizes, got {tuple(input_shape)}")
    activations = 0

    def add_output_size(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal activations
        activations += output.numel()

    hooks = [m.register_forward_hook(add_output_size) for m in model.modules() if isinstance(m, layer_types)]
    was_training = model.training
    model.eval()  # no BatchNorm statistics update; the cost is the same in both modes
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(_example_input(model, input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    flops_two_per_multiply_add = counter.get_total_flops()
    return Complexity(
        flops=int(flops_two_per_multiply_add // 2),
        params=count_params(model),
        activations=int(activations),
    )
