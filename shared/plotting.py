"""One look for every figure, and byte-stable files.

``theme()`` is applied by ``shared.notebook.start``; ``save`` writes PNG and SVG with
no timestamps or software tags, so the same data give the same bytes (DVC then sees
no spurious change)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; JupyterLab's inline backend overrides when interactive
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

PALETTE = "colorblind"
FIG_DPI = 150


def theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font="DejaVu Sans")
    plt.rcParams.update(
        {
            "figure.dpi": FIG_DPI,
            "savefig.dpi": FIG_DPI,
            "savefig.bbox": "tight",
            "svg.hashsalt": "efflab",  # fixed ids in SVG output
            "svg.fonttype": "none",  # text stays text; no embedded glyph paths
            "axes.titleweight": "bold",
        }
    )


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` deterministically; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return [png, svg]
