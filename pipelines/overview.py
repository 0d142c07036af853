"""Execute the cross-paper notebooks (notebooks/NN_*.py) into reports/notebooks/.

    python -m pipelines.overview

They read only the claims ledger and the papers' figures; the same papermill runner as
the papers', so a failure reports notebook and cell in one line.
"""

from __future__ import annotations

import sys
import tempfile

from pipelines.run_paper import NotebookFailed, execute_notebook
from shared.paths import REPORTS, ROOT

OUT = REPORTS / "notebooks"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        target = OUT / f"{source.stem}.ipynb"
        try:
            with tempfile.TemporaryDirectory(prefix="efflab-kernel-") as sockets:
                seconds = execute_notebook(source, target, {}, sockets)
        except NotebookFailed as exc:
            print(f"error: notebook notebooks/{source.name}, {exc}", file=sys.stderr)
            return 1
        print(f"[overview] {source.name:<32} {seconds:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
