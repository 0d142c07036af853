"""MeZO-SGD with seed-replayed perturbations (Malladi et al. 2023), the update under ZO2 and DistZO2.

One step with step seed s, z ~ N(0, I) drawn from s:

    L+ = L(θ + εz),  L- = L(θ - εz),  g = (L+ - L-) / (2ε),  θ <- θ - η g z

z is never stored: every tensor's slice of z is regenerated from its own seed
(:func:`z_seed`: run seed, step, the tensor's index) whenever it is needed, one tensor at a
time, and the parameters are changed in place, so training needs the memory of inference plus
one tensor of noise. Because a tensor's z depends only on (seed, step, index), the tensors may be
visited in any order and on any process: ZO2 streams blocks, DistZO2 splits the two forwards.

Every variant here applies, per tensor and per step, the SAME sequence of in-place additions
(``+ε z``, ``-2ε z``, ``+ε z``, ``-η g z``; :data:`SEQUENCE`) and computes g with the same
function (:func:`zo_grad`) from the same float losses, so perturbation parallelism gives
parameters bit-identical to the serial run, not merely close (tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

SEQUENCE = ("+eps", "-2eps", "+eps", "-lr*g")  # the in-place additions every variant applies to every tensor
_MOD = 2**62


def z_seed(run_seed: int, step: int, index: int) -> int:
    """The seed of tensor ``index``'s noise at ``step`` (independent of every other tensor's)."""
    return ((run_seed * 1_000_003 + step) * 1_000_033 + index) % _MOD


def noise(t: torch.Tensor, seed: int) -> torch.Tensor:
    """z for tensor ``t``: N(0, 1) of its shape, dtype and device, drawn from ``seed`` alone."""
    gen = torch.Generator(device=t.device)
    gen.manual_seed(seed)
    return torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype)


def apply(tensors: Iterable[tuple[int, torch.Tensor]], run_seed: int, step: int, alphas: Sequence[float]) -> None:
    """For each (index, tensor): regenerate its z once, then ``t += a z`` for each a in ``alphas``, in place."""
    with torch.no_grad():
        for index, t in tensors:
            z = noise(t, z_seed(run_seed, step, index))
            for a in alphas:
                t.add_(z, alpha=a)


def zo_grad(loss_plus: Sequence[float], loss_minus: Sequence[float], eps: float) -> float:
    """The projected gradient: the mean over data shards of (L+ - L-) / (2ε) (one shard: MeZO's g)."""
    if len(loss_plus) != len(loss_minus) or not loss_plus:
        raise ValueError(f"zo_grad: needs as many L+ as L- (>= 1), got {len(loss_plus)} and {len(loss_minus)}")
    return sum(float(p) - float(m) for p, m in zip(loss_plus, loss_minus)) / (2.0 * eps) / len(loss_plus)


def indexed(model: torch.nn.Module) -> list[tuple[int, torch.Tensor]]:
    """The model's parameters with their global index (tied weights once), in ``parameters()`` order."""
    return list(enumerate(p.data for p in model.parameters()))


def lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM on (x, y = x shifted by one), averaged in float64:
    the mean of equal data shards' means then equals the whole batch's to ~1e-16, which the ZO
    gradient (a loss difference divided by 2ε) would otherwise amplify from fp32 rounding."""
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").double().mean()


@dataclass(frozen=True)
class ZOConfig:
    eps: float = 1e-3  # perturbation scale ε (MeZO: 1e-3)
    lr: float = 1e-4  # learning rate η
    seed: int = 0  # run seed; step t's noise is z_seed(seed, t, index)

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"eps: must be > 0, got {self.eps}")
        if not self.lr >= 0:
            raise ValueError(f"lr: must be >= 0, got {self.lr}")


def mezo_step(params: list[tuple[int, torch.Tensor]], loss_fn: Callable[[], torch.Tensor], cfg: ZOConfig,
              step: int) -> tuple[float, float, float]:
    """One serial MeZO-SGD step in place; returns (L+, L-, g). ``loss_fn`` evaluates the current θ."""
    with torch.no_grad():
        apply(params, cfg.seed, step, [cfg.eps])
        lp = float(loss_fn())
        apply(params, cfg.seed, step, [-2 * cfg.eps])
        lm = float(loss_fn())
        g = zo_grad([lp], [lm], cfg.eps)
        apply(params, cfg.seed, step, [cfg.eps, -cfg.lr * g])
    return lp, lm, g


def train_serial(model, batches: Sequence, cfg: ZOConfig, steps: int, progress=None) -> list[dict]:
    """``steps`` serial MeZO steps on ``batches[t % len(batches)]``; the history of (L+, L-, g)."""
    params = indexed(model)
    history = []
    it = range(steps) if progress is None else progress(range(steps), desc="MeZO (serial)")
    for t in it:
        x, y = batches[t % len(batches)]
        lp, lm, g = mezo_step(params, lambda: lm_loss(model, x, y), cfg, t)
        history.append({"step": t, "loss_plus": lp, "loss_minus": lm, "g": g})
    return history


def random_batches(vocab_size: int, n: int, batch_size: int, seq_len: int, seed: int, device: str = "cpu") -> list:
    """``n`` batches (x, y = x shifted by one) of uniform random tokens: for timing and exactness runs."""
    gen = torch.Generator().manual_seed(seed)
    windows = torch.randint(0, vocab_size, (n, batch_size, seq_len + 1), generator=gen)
    return [(w[:, :-1].contiguous().to(device), w[:, 1:].contiguous().to(device)) for w in windows]


def flat(model) -> torch.Tensor:
    """Every parameter, flattened into one fp32 CPU vector (for comparisons)."""
    return torch.cat([p.detach().float().cpu().flatten() for p in model.parameters()])


@torch.no_grad()
def eval_loss(model, batches: Sequence) -> float:
    return sum(float(lm_loss(model, x, y)) for x, y in batches) / len(batches)
