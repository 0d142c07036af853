"""Per-notebook overhead of the pipeline's runner against papermill itself.

The runner executes each notebook in a fresh kernel (isolation) through papermill's API
over Unix sockets. Two peers execute the same trivial notebook, interleaved: papermill's
API in the same process (a like-for-like peer: the same work minus our kernel manager),
and the papermill CLI, what most DVC + papermill projects run per stage (it pays a new
interpreter and papermill's imports on top, which the runner pays once per paper).
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
        import papermill as pm

        ours, api, cli = [], [], []
        for _ in range(ROUNDS):  # interleaved, so machine noise hits all alike
            with tempfile.TemporaryDirectory() as sockets:
                ours.append(execute_notebook(script, tmp / "a.ipynb", {"x": 2}, sockets))
            t0 = time.perf_counter()
            pm.execute_notebook(str(ipynb), str(tmp / "b.ipynb"), parameters={"x": 2}, kernel_name="python3",
                                progress_bar=False)
            api.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([papermill, "-k", "python3", "-p", "x", "2", str(ipynb), str(tmp / "c.ipynb")],
                           check=True, capture_output=True)
            cli.append(time.perf_counter() - t0)
    record = {"name": "notebook overhead: trivial notebook, fresh kernel", "ours": statistics.median(ours),
              "unit": "s", "lower_is_better": True}
    return [
        {**record, "peer": "papermill.execute_notebook (same process)", "peer_value": statistics.median(api)},
        {**record, "peer": "papermill CLI (new process per notebook)", "peer_value": statistics.median(cli)},
    ]
