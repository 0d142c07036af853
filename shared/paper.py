"""Paper folders: discovery and import.

A paper lives in ``papers/NN-slug/``. Its key is ``pNN`` (used in params.yaml and the
Hydra config group of the same name). Its Python files are importable as the package
``paperNN`` (``from paper06 import pruning``) once :func:`import_paper` has run; the
folder name itself (digits, hyphen) is not a valid module name, and registering a
per-paper package keeps two papers' same-named files apart in one process.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from shared.paths import PAPERS

_FOLDER = re.compile(r"^(\d{2})-[a-z0-9][a-z0-9-]*$")
_NOTEBOOK = re.compile(r"^\d{2}_[A-Za-z0-9_]+\.py$")


@dataclass(frozen=True)
class Paper:
    number: str  # "06"
    folder: Path  # papers/06-data-pruning

    @property
    def key(self) -> str:  # params.yaml key and Hydra config group
        return f"p{self.number}"

    @property
    def package(self) -> str:  # import name of the folder's Python files
        return f"paper{self.number}"

    @property
    def slug(self) -> str:
        return self.folder.name

    @property
    def notebooks(self) -> list[Path]:
        scripts = sorted((self.folder / "notebooks").glob("*.py"))
        misnamed = [p.name for p in scripts if not _NOTEBOOK.match(p.name)]
        if misnamed:  # it would silently never run
            raise RuntimeError(f"{self.slug}/notebooks: name notebooks NN_name.py, not {misnamed}")
        return scripts


def all_papers() -> list[Paper]:
    found = []
    for folder in sorted(PAPERS.iterdir()):
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        match = _FOLDER.match(folder.name)
        if match is None:  # a misnamed folder would otherwise drop out of every stage and test
            raise RuntimeError(f"papers/{folder.name}: name a paper folder NN-slug (two digits, lower-case slug)")
        found.append(Paper(match.group(1), folder))
    numbers = [p.number for p in found]
    dupes = {n for n in numbers if numbers.count(n) > 1}
    if dupes:
        raise RuntimeError(f"two paper folders share a number: {sorted(dupes)}")
    return found


def get_paper(ident: str | int) -> Paper:
    """Look a paper up by number (6, "6", "06"), key ("p06") or folder name."""
    text = str(ident).strip()
    text = text[1:] if text.startswith("p") and text[1:].isdigit() else text
    number = f"{int(text):02d}" if text.isdigit() else text.split("-", 1)[0]
    for paper in all_papers():
        if paper.number == number:
            return paper
    known = ", ".join(p.number for p in all_papers())
    raise KeyError(f"paper {ident!r}: no folder papers/{number}-*; known papers: {known}")


def import_paper(ident: str | int) -> types.ModuleType:
    """Register the paper's folder as package ``paperNN`` and return it."""
    paper = get_paper(ident)
    existing = sys.modules.get(paper.package)
    if existing is not None:
        return existing
    package = types.ModuleType(paper.package, f"Code of {paper.slug}")
    package.__path__ = [str(paper.folder)]  # submodules resolve from the folder
    package.__file__ = None
    sys.modules[paper.package] = package
    return package
