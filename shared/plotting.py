"""One look for every figure, and byte-stable files.

``theme()`` is applied by ``shared.notebook.start``; ``save`` writes PNG and SVG with
no timestamps or software tags, so the same data give the same bytes (DVC then sees
no spurious change)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # the backend is the caller's: inline in JupyterLab, Agg in the pipeline
import seaborn as sns

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


def save(fig: plt.Figure, stem: Path, close: bool = True) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` deterministically; return the paths. ``close``
    frees the figure; leave it open where it should still be shown (JupyterLab)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # Append the suffixes (with_suffix would cut "keep_f0.1" to "keep_f0").
    png, svg = stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None, "Creator": None})
    if close:
        plt.close(fig)
    return [png, svg]
