"""Model scaling strategies of Dollár, Singh & Girshick (CVPR 2021), on a small AnyNet.

A scaling strategy multiplies a base network's flops by ``s`` by growing its depth d
(blocks per stage), width w (channels) and input resolution r:

    d <- d * s**e_d,    w <- w * s**(e_w / 2),    r <- r * s**(e_r / 2),    e_d + e_w + e_r = 1.

Since a conv layer costs flops ~ w^2 r^2, params ~ w^2 and activations ~ w r^2, and a
network of d such layers d times that, the scaled network has (Table 4 of the paper)

    flops ~ s,    params ~ s**(e_d + e_w),    activations ~ s**(e_d + e_w/2 + e_r).

Strategies are named by the dimensions they grow: d, w, r, dw, dr, wr, dwr (equal shares)
and the paper's *fast* compound scaling dWr: e_w = alpha, e_d = e_r = (1 - alpha)/2 with
alpha = 0.8, so activations grow only as s**(1 - alpha/2) = s**0.6.

The network family (``AnyNet``) is a stem (3x3 conv, stride 2), stages of residual basic
blocks (two 3x3 convs; the first block of a stage may change width and stride), and a head
(global average pool + linear). Like the paper's code (pycls), depths round to the nearest
integer (at least 1) and widths to a multiple of 8; unlike pycls's AnyNet we scale the stem
width too (in a network this small, a fixed stem would be a visible share of the cost).
Resolution rounds to the nearest pixel.

This module also holds the three experiments: complexity counting (flops, params and
activations from the real torch models via ``shared.complexity``), runtime measurement
(``shared.timing``) and accuracy on scikit-learn's digits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from shared import complexity, timing

STRATEGIES = ("d", "w", "r", "dw", "dr", "wr", "dwr", "dWr")
MEASURES = ("flops", "params", "activations")


# --------------------------------------------------------------------------- strategies


def strategy_exponents(strategy: str, alpha: float) -> tuple[float, float, float]:
    """(e_d, e_w, e_r): the share of the flops increase that goes to depth, width and
    resolution. They sum to 1. ``alpha`` is the width share of the fast strategy dWr."""
    if strategy == "dWr":
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
        return ((1.0 - alpha) / 2, alpha, (1.0 - alpha) / 2)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: unknown {strategy!r}; known: {', '.join(STRATEGIES)}")
    # the others share equally among the dimensions they name
    shares = [1.0 if dim in strategy else 0.0 for dim in "dwr"]
    total = sum(shares)
    return (shares[0] / total, shares[1] / total, shares[2] / total)


def scaling_factors(strategy: str, s: float, alpha: float) -> tuple[float, float, float]:
    """Multipliers (depth, width, resolution) that scale flops by ``s`` (before rounding)."""
    if s <= 0:
        raise ValueError(f"s: must be > 0, got {s}")
    e_d, e_w, e_r = strategy_exponents(strategy, alpha)
    return (s**e_d, s ** (e_w / 2), s ** (e_r / 2))


def ideal_exponents(strategy: str, alpha: float) -> dict[str, float]:
    """Exponents of s for flops, params and activations under the complexity model."""
    e_d, e_w, e_r = strategy_exponents(strategy, alpha)
    return {"flops": e_d + e_w + e_r, "params": e_d + e_w, "activations": e_d + e_w / 2 + e_r}


# ------------------------------------------------------------------------------ network


@dataclass(frozen=True)
class NetConfig:
    stem_width: int
    widths: tuple[int, ...]  # channels of each stage
    depths: tuple[int, ...]  # residual blocks of each stage
    resolution: int  # input image side, pixels
    in_channels: int = 1
    num_classes: int = 10

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError(f"widths and depths: need the same non-zero length, got {self.widths}, {self.depths}")
        if min(self.widths + self.depths + (self.stem_width, self.resolution)) < 1:
            raise ValueError("widths, depths, stem_width and resolution must all be >= 1")


def _round_width(width: float, multiple: int) -> int:
    return max(multiple, int(round(width / multiple)) * multiple)


def scale_config(base: NetConfig, strategy: str, s: float, alpha: float, width_multiple: int = 8) -> NetConfig:
    """The base network scaled by ``strategy`` to about ``s`` times its flops."""
    d_factor, w_factor, r_factor = scaling_factors(strategy, s, alpha)
    return replace(
        base,
        stem_width=_round_width(base.stem_width * w_factor, width_multiple),
        widths=tuple(_round_width(w * w_factor, width_multiple) for w in base.widths),
        depths=tuple(max(1, int(round(d * d_factor))) for d in base.depths),
        resolution=max(1, int(round(base.resolution * r_factor))),
    )


def _conv_bn(w_in: int, w_out: int, kernel: int, stride: int) -> nn.Sequential:
    conv = nn.Conv2d(w_in, w_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(w_out))


class ResidualBlock(nn.Module):
    """x -> relu(x' + conv-bn(relu(conv-bn(x)))), with x' = x or a 1x1 projection."""

    def __init__(self, w_in: int, w_out: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn(w_in, w_out, 3, stride)
        self.conv2 = _conv_bn(w_out, w_out, 3, 1)
        nn.init.zeros_(self.conv2[1].weight)  # each block starts as identity: deep nets train at once
        needs_projection = stride != 1 or w_in != w_out
        self.shortcut = _conv_bn(w_in, w_out, 1, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.conv2(F.relu(self.conv1(x))))


class AnyNet(nn.Module):
    """Stem (stride 2), stages (the first at stride 1, the others at stride 2), head."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = _conv_bn(cfg.in_channels, cfg.stem_width, 3, 2)
        blocks, w_in = [], cfg.stem_width
        for stage, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
            for block in range(depth):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(ResidualBlock(w_in, width, stride))
                w_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(w_in, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def input_shape(cfg: NetConfig, batch_size: int = 1) -> tuple[int, int, int, int]:
    return (batch_size, cfg.in_channels, cfg.resolution, cfg.resolution)


def count_complexity(cfg: NetConfig) -> complexity.Complexity:
    """Exact per-image flops, params and activations of the network, from a forward pass
    of the torch model on PyTorch's meta device: the same modules and operators on shapes
    alone, so the counts equal a CPU run's (see the tests) at no arithmetic cost."""
    with torch.device("meta"):
        model = AnyNet(cfg)
    return complexity.count(model, input_shape(cfg))


# --------------------------------------------------------------------------- complexity


def complexity_table(
    base: NetConfig,
    strategies: Sequence[str],
    scale_factors: Sequence[float],
    alpha: float,
    width_multiple: int = 8,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """One row per (strategy, s): the scaled network and its exact per-image flops,
    params and activations (``count_complexity``)."""
    grid = [(strategy, s) for strategy in strategies for s in scale_factors]
    if progress is not None:
        grid = progress(grid, desc="counting complexity", total=len(grid))
    rows = []
    for strategy, s in grid:
        cfg = scale_config(base, strategy, s, alpha, width_multiple)
        cx = count_complexity(cfg)
        rows.append(
            {
                "strategy": strategy,
                "s": float(s),
                "depths": "-".join(map(str, cfg.depths)),
                "widths": "-".join(map(str, (cfg.stem_width, *cfg.widths))),
                "resolution": cfg.resolution,
                **cx.as_dict(),
            }
        )
    return pd.DataFrame(rows)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): the exponent b of y ~ a * x**b."""
    log_x, log_y = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if len(log_x) < 2 or np.ptp(log_x) == 0:
        raise ValueError("loglog_slope: need at least two distinct x values")
    slope, _intercept = np.polyfit(log_x, log_y, 1)
    return float(slope)


def fit_exponents(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Exponent of s for each strategy and measure, fitted over the table's s values,
    next to the complexity model's ideal value. ``exponent_vs_flops`` is the exponent
    against the networks' measured flops instead of the nominal s: rounding depths and
    widths moves the real flops off s, and this exponent is blind to that."""
    rows = []
    for strategy, group in table.groupby("strategy", sort=False):
        ideal = ideal_exponents(strategy, alpha)
        for measure in MEASURES:
            rows.append(
                {
                    "strategy": strategy,
                    "measure": measure,
                    "exponent": loglog_slope(group["s"], group[measure]),
                    "exponent_vs_flops": loglog_slope(group["flops"], group[measure]),
                    "ideal": ideal[measure],
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ runtime


def _autocast(device: str, dtype: str):
    enabled = dtype == "bfloat16"
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=enabled)


def runtime_table(
    base: NetConfig,
    strategies: Sequence[str],
    scale_factors: Sequence[float],
    alpha: float,
    *,
    batch_size: int,
    repeats: int,
    warmup: int,
    num_threads: int | None,
    device: str,
    dtype: str = "float32",
    width_multiple: int = 8,
    seed: int = 0,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """Median wall-clock time of a forward pass (inference) and of a training step
    (forward, backward, SGD update) at ``batch_size``, for every scaled network, next to
    its complexity. All networks are timed interleaved (``shared.timing``), so a slow phase
    of the machine hits all of them alike. ``dtype`` "bfloat16" runs under autocast."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype: float32 or bfloat16, got {dtype!r}")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # pick the fastest conv kernels, as a real run would
    generator = torch.Generator().manual_seed(seed)
    forward_fns, train_fns, rows = {}, {}, []
    for strategy in strategies:
        for s in scale_factors:
            cfg = scale_config(base, strategy, s, alpha, width_multiple)
            cx = count_complexity(cfg)
            model = AnyNet(cfg).to(device)
            x = torch.randn(input_shape(cfg, batch_size), generator=generator).to(device)
            y = torch.randint(0, cfg.num_classes, (batch_size,), generator=generator).to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            key = f"{strategy}|{s:g}"
            forward_fns[key] = _forward_fn(model, x, device, dtype)
            train_fns[key] = _train_step_fn(model, optimizer, x, y, device, dtype)
            rows.append({"key": key, "strategy": strategy, "s": float(s), **cx.as_dict()})
    table = pd.DataFrame(rows).set_index("key")
    for kind, fns in (("forward", forward_fns), ("train", train_fns)):
        results = timing.benchmark(
            fns, repeats=repeats, warmup=warmup, num_threads=num_threads, device=device, progress=progress
        )
        table[f"{kind}_median_s"] = [results[k].median_s for k in table.index]
        table[f"{kind}_iqr_s"] = [results[k].iqr_s for k in table.index]
    return table.reset_index(drop=True)


def _forward_fn(model: nn.Module, x: torch.Tensor, device: str, dtype: str) -> Callable[[], object]:
    def forward() -> None:
        model.eval()
        with torch.no_grad(), _autocast(device, dtype):
            model(x)

    return forward


def _train_step_fn(model, optimizer, x, y, device: str, dtype: str) -> Callable[[], object]:
    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return train_step


def runtime_correlations(table: pd.DataFrame) -> dict[str, float]:
    """Pearson r of log runtime with log activations and with log flops, over all the
    scaled networks, for the forward pass and the training step (on log axes, since the
    networks span a 16x range of flops); and the mean Spearman rank correlation of runtime
    with activations and with flops among the strategies at each s > 1."""
    out = {}
    for kind in ("forward", "train"):
        log_t = np.log(table[f"{kind}_median_s"].to_numpy())
        for measure in ("activations", "flops", "params"):
            r = np.corrcoef(log_t, np.log(table[measure].to_numpy(dtype=float)))[0, 1]
            out[f"{kind}_r_{measure}"] = float(r)
        out[f"{kind}_r_acts_minus_r_flops"] = out[f"{kind}_r_activations"] - out[f"{kind}_r_flops"]
        # at one s all networks have ~the same flops, so the pooled r above is dominated by s;
        # the rank correlation among the strategies at each s (s > 1) isolates the paper's point
        for measure in ("activations", "flops"):
            per_s = [
                _spearman(group[f"{kind}_median_s"], group[measure])
                for s, group in table.groupby("s")
                if s > 1 and len(group) >= 3
            ]
            if per_s:
                out[f"{kind}_spearman_{measure}_within_s"] = float(np.mean(per_s))
    # a measure constant over the networks (params under r alone) has no correlation
    return {key: value for key, value in out.items() if np.isfinite(value)}


def _spearman(x: pd.Series, y: pd.Series) -> float:
    return float(np.corrcoef(x.rank().to_numpy(), y.rank().to_numpy())[0, 1])


# ----------------------------------------------------------------------------- accuracy


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float  # peak learning rate of SGD (Nesterov momentum 0.9; linear warm-up, then cosine decay)
    warmup_epochs: float  # linear warm-up from ~0 to lr: keeps wide networks from diverging early
    weight_decay: float
    noise_std: float  # Gaussian pixel noise added at the 8x8 level, train and test
    test_noise_draws: int  # noisy copies of the test set averaged over


def _images(x_flat: np.ndarray) -> torch.Tensor:
    """Flattened 8x8 digits (pixels in [0, 1]) as (N, 1, 8, 8), centred on 0."""
    return torch.as_tensor(x_flat, dtype=torch.float32).reshape(-1, 1, 8, 8) - 0.5


def _at_resolution(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear interpolation to the network's input side: more pixels, no new information."""
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


def train_and_evaluate(
    cfg: NetConfig,
    split,
    settings: TrainSettings,
    *,
    seed: int,
    device: str = "cpu",
) -> float:
    """Train the network on the noisy, upsampled digits; return test accuracy (%)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = AnyNet(cfg).to(device)
    x_train, y_train = _images(split.x_train), torch.as_tensor(split.y_train)
    steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = min(total_steps - 1, round(settings.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay
    )

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    for _epoch in range(settings.epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            noise = settings.noise_std * torch.randn(x_train[idx].shape, generator=generator)
            x = _at_resolution(x_train[idx] + noise, cfg.resolution).to(device)
            loss = F.cross_entropy(model(x), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return evaluate(model, cfg, split, settings, seed=seed, device=device)


@torch.no_grad()
def evaluate(model: nn.Module, cfg: NetConfig, split, settings: TrainSettings, *, seed: int, device: str) -> float:
    """Accuracy (%) over ``test_noise_draws`` noisy copies of the test set. The noise is
    drawn from a generator seeded by ``seed`` alone, so every network sees the same copies."""
    model.eval()
    generator = torch.Generator().manual_seed(10_000 + seed)
    x_test, y_test = _images(split.x_test), torch.as_tensor(split.y_test).to(device)
    correct = 0
    for _draw in range(settings.test_noise_draws):
        noisy = x_test + settings.noise_std * torch.randn(x_test.shape, generator=generator)
        for start in range(0, len(noisy), 512):
            x = _at_resolution(noisy[start : start + 512], cfg.resolution).to(device)
            correct += int((model(x).argmax(dim=1) == y_test[start : start + 512]).sum())
    return 100.0 * correct / (settings.test_noise_draws * len(x_test))


def accuracy_table(
    base: NetConfig,
    strategies: Sequence[str],
    s: float,
    alpha: float,
    split,
    settings: TrainSettings,
    *,
    seeds: Sequence[int],
    device: str = "cpu",
    width_multiple: int = 8,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """Test accuracy of the base network and of each strategy's network at flops x ``s``,
    one row per (strategy, seed); "base" is the unscaled network."""
    grid = [(strategy, seed) for strategy in ("base", *strategies) for seed in seeds]
    if progress is not None:
        grid = progress(grid, desc="training", total=len(grid))
    rows = []
    for strategy, seed in grid:
        cfg = base if strategy == "base" else scale_config(base, strategy, s, alpha, width_multiple)
        accuracy = train_and_evaluate(cfg, split, settings, seed=seed, device=device)
        cx = count_complexity(cfg)
        rows.append(
            {"strategy": strategy, "s": 1.0 if strategy == "base" else float(s), "seed": seed, "accuracy": accuracy, **cx.as_dict()}
        )
    return pd.DataFrame(rows)
