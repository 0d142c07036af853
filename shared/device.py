"""Pick the torch device a run asked for, or stop with one line saying why not."""

from __future__ import annotations


class DeviceError(RuntimeError):
    pass


def resolve(requested: str, scale: str = "") -> str:
    """``cpu`` | ``cuda`` | ``auto`` -> ``"cpu"`` or ``"cuda"``; ``scale`` names the scale in errors."""
    if requested == "cpu":
        return "cpu"
    import torch  # only paid for when a GPU may be used

    available = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if available else "cpu"
    if requested == "cuda":
        if not available:
            raise DeviceError(
                f"scale.device=cuda{f' (scale={scale})' if scale else ''} needs a CUDA GPU, but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}); use scale=cpu or run on a GPU server"
            )
        return "cuda"
    raise DeviceError(f"scale.device: {requested!r} is not allowed; allowed: cpu, cuda, auto")
