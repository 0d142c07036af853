"""The fitted-scaling-function baselines Projektor is compared with (paper 09).

- **Per-mixture power law** (the usual learning-curve extrapolation): train the mixture at
  several pilot sizes, fit ``acc = A - B (n/n_0)^-c`` and read it at the target size. Each
  mixture is its own fit, so a mixture can only be predicted after it was trained at every
  pilot size — the cost Projektor avoids.
- **Mixing law with a size term** (exponential in the mixture, as in data-mixing laws,
  times a power of n): ``err = c + exp(sum_i t_i p_i - alpha ln(n/n_0))``, one fit over
  the same trained pilot mixtures Projektor uses, so it costs no extra training.
- **Last value**: the accuracy measured at the largest pilot size, ``acc(n) = acc(n_1)``.

Fits go through the shared toolkit (``shared.scaling``): Huber loss on the residuals,
many starts, the best kept.
"""

from __future__ import annotations

import numpy as np

from shared import scaling


def _power(p, x):
    import torch

    c = p["g"] ** 2
    c = torch.where(c < 1e-9, torch.full_like(c, 1e-9), c)  # at c -> 0 the curve is a + b ln x
    return p["a"] + p["b"] * (-torch.expm1(-c * torch.log(x["n"]))) / c


def _power_derived(p: dict) -> dict:
    c = max(p["g"] ** 2, 1e-9)
    return {"c": c, "A": p["a"] + p["b"] / c, "B": p["b"] / c}


# acc = A - B x^-c with x = n/n0, written as a + b (1 - x^-c)/c, c = g^2 >= 0: the same
# saturating power law (A = a + b/c, B = b/c), but well-conditioned. In the A, B, c form a
# nearly straight learning curve sends A, B -> infinity and c -> 0 together, and the
# toolkit's Newton iterations crawl along that valley (1-2 s a fit, unconverged); here
# that limit is the finite point c = 0 (the log-linear curve a + b ln x), and fits converge.
POWER_LAW = scaling.Law(
    name="power",
    formula="acc = a + b (1 - x^-c)/c, c = g^2, x = n/n0   (= A - B x^-c)",
    inputs=("n",),
    params=("a", "b", "g"),
    fn=_power,
    space="linear",
    box={"a": (0.3, 1.0), "b": (0.0, 0.3), "g": (0.2, 1.2)},
    derived=_power_derived,
    default_starts=16,
)


def fit_power_law(n: np.ndarray, accuracy: np.ndarray, n0: float, seed: int = 0) -> scaling.Fit:
    """One mixture's learning curve (sizes n, accuracies) -> the fitted power law (n in units of n0)."""
    n = np.asarray(n, float)
    if len(np.unique(n)) < 3:
        raise ValueError(f"power law: needs at least 3 distinct sizes (3 parameters), got {sorted(set(n))}")
    return scaling.fit(POWER_LAW, {"n": n / n0}, np.asarray(accuracy, float), space="linear", seed=seed)


def predict_power_law(fit: scaling.Fit, n, n0: float) -> np.ndarray:
    return np.clip(fit.predict(n=np.asarray(n, float) / n0), 0.0, 1.0)


def mixing_law(k: int) -> scaling.Law:
    """err = c + exp(sum_i t_i p_i - alpha ln(n/n0)) for k sources (inputs p0..p{k-1}, n)."""
    names = tuple(f"t{i}" for i in range(k))

    def fn(p, x):
        import torch

        logit = sum(p[t] * x[f"p{i}"] for i, t in enumerate(names)) - p["alpha"] * torch.log(x["n"])
        return p["c"] + torch.exp(logit)

    return scaling.Law(
        name=f"mixing_{k}",
        formula="err = c + exp(sum_i t_i p_i - alpha ln(n/n0))",
        inputs=(*(f"p{i}" for i in range(k)), "n"),
        params=("c", *names, "alpha"),
        fn=fn,
        space="log",
        box={"c": (0.0, 0.1), **{t: (-4.0, 0.0) for t in names}, "alpha": (0.0, 1.5)},
        default_starts=128,
    )


def _mixing_inputs(p: np.ndarray, n, n0: float) -> dict:
    p = np.atleast_2d(np.asarray(p, float))
    n = np.broadcast_to(np.asarray(n, float), (len(p),))
    return {**{f"p{i}": p[:, i] for i in range(p.shape[1])}, "n": n / n0}


def fit_mixing_law(p: np.ndarray, n: np.ndarray, accuracy: np.ndarray, n0: float, seed: int = 0) -> scaling.Fit:
    """Fit on trained pilot sets: mixtures p [m, k], sizes n [m], accuracies [m]."""
    p = np.atleast_2d(np.asarray(p, float))
    err = np.maximum(1.0 - np.asarray(accuracy, float), 1e-4)  # log residuals need err > 0
    return scaling.fit(mixing_law(p.shape[1]), _mixing_inputs(p, n, n0), err, seed=seed)


def predict_mixing_law(fit: scaling.Fit, p: np.ndarray, n, n0: float) -> np.ndarray:
    return np.clip(1.0 - fit.predict(_mixing_inputs(p, n, n0)).ravel(), 0.0, 1.0)
