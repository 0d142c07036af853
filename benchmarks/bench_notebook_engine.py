"""Per-notebook overhead of the pipeline's runner against the papermill CLI.

The runner executes each notebook in a fresh kernel (isolation) through papermill's
API over Unix sockets; the peer is what most DVC + papermill projects run per stage,
`papermill in.ipynb out.ipynb`. Both execute the same trivial notebook, interleaved.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext

SOURCE = '# %% tags=["parameters"]\nx = 1\n\n# %%\ny = x + 1\n'
ROUNDS = 5


def run() -> list[dict]:
    from pipelines.run_paper import execute_notebook

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        script = tmp / "nb.py"
        script.write_text(SOURCE)
        ipynb = tmp / "nb.ipynb"
        nb = jupytext.read(script)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(nb, ipynb)
        papermill = str(Path(sys.executable).parent / "papermill")
        ours, peer = [], []
        for _ in range(ROUNDS):  # interleaved, so machine noise hits both alike
            with tempfile.TemporaryDirectory() as sockets:
                ours.append(execute_notebook(script, tmp / "a.ipynb", {"x": 2}, sockets))
            t0 = time.perf_counter()
            subprocess.run([papermill, "-k", "python3", "-p", "x", "2", str(ipynb), str(tmp / "b.ipynb")],
                           check=True, capture_output=True)
            peer.append(time.perf_counter() - t0)
    return [
        {
            "name": "notebook overhead: trivial notebook, fresh kernel",
            "ours": statistics.median(ours),
            "peer": "papermill CLI",
            "peer_value": statistics.median(peer),
            "unit": "s",
            "lower_is_better": True,
        }
    ]
