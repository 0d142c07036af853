"""Progress callables: ``progress(iterable, desc="", total=None) -> iterable``.

Long loops in ``shared`` take one of these, so a notebook passes ``run.progress`` and a
library call without one gets a bar (``bar``) or nothing (``silent``).
"""

from __future__ import annotations

import sys
from typing import Iterable


def bar(iterable: Iterable, desc: str = "", total: int | None = None):
    """A text tqdm bar on stderr: works in a terminal, JupyterLab and executed notebooks alike."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, mininterval=0.5, file=sys.stderr)


def silent(iterable: Iterable, desc: str = "", total: int | None = None):
    return iterable
