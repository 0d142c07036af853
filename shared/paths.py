"""Where things live. Every path in the project is derived from the repository root,
so code behaves the same whatever the current directory (JupyterLab starts kernels in
the notebook's folder, the pipeline in the root)."""

from __future__ import annotations

import os
from pathlib import Path

# shared/ sits directly under the root; no marker-file search needed.
ROOT = Path(__file__).resolve().parent.parent
PAPERS = ROOT / "papers"
CONF = ROOT / "pipelines" / "conf"
PARAMS_FILE = ROOT / "params.yaml"
REPORTS = ROOT / "reports"
BUILD = ROOT / "build"  # scratch: staging of pipeline outputs, interactive runs, failed notebooks


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader (or a resumed
    build checking a completion marker) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no stray partial file beside the untouched old one
        raise
