"""The one call at the top of every paper notebook: ``run = notebook.start("06", ...)``.

It makes a notebook behave the same in JupyterLab and under the pipeline: the working
directory is the repository root, parameters are loaded (or composed at another
scale), validated and seeded, the device is resolved, the plotting theme is set, and
every output goes through ``run`` into one folder:

    <out>/metrics.json   deterministic numbers the claims are checked against
    <out>/timings.json   wall-clock measurements (differ run to run; kept apart)
    <out>/results/*.csv  tidy tables (DVC plots)
    <out>/figures/*.png|svg

``<out>`` is the staging folder the pipeline passes as ``out_dir`` (moved into the
paper's folder only when every notebook succeeded), or ``build/lab/pNN/<scale>`` for an
interactive run, which therefore never touches the pipeline's outputs.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

from shared import config, device, plotting, progress
from shared.paper import Paper, get_paper, import_paper
from shared.paths import BUILD, ROOT


@dataclass
class Run:
    paper: Paper
    params: BaseModel
    scale: str
    seed: int
    device: str
    out_dir: Path
    interactive: bool
    tree: dict[str, Any]  # the composed parameters (every section): artifacts are located by them

    @property
    def results_dir(self) -> Path:
        return self.out_dir / "results"

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"

    def progress(self, iterable: Iterable, desc: str = "", total: int | None = None):
        return progress.bar(iterable, desc=desc, total=total)

    def log_metrics(self, values: dict[str, Any]) -> None:
        """Merge into metrics.json. Deterministic quantities only (no wall-clock)."""
        _merge_json(self.out_dir / "metrics.json", values)

    def log_timings(self, values: dict[str, Any]) -> None:
        """Merge into timings.json: measurements that differ from run to run."""
        _merge_json(self.out_dir / "timings.json", values)

    def save_table(self, df, name: str) -> Path:
        path = self.results_dir / f"{_stem(name)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        return path

    def load_table(self, name: str):
        import pandas as pd

        path = self.results_dir / f"{_stem(name)}.csv"
        if not path.exists():
            have = sorted(p.stem for p in self.results_dir.glob("*.csv"))
            raise FileNotFoundError(
                f"table {name!r}: not in {path.parent} (an earlier notebook of this paper writes it); have: {have}"
            )
        return pd.read_csv(path)

    def artifact(self, name: str) -> Path:
        """The folder of a shared artifact (``corpus``, ``tinylm``; see shared/artifacts.py)
        built with this run's parameters. A pipeline run reads the copy DVC built (and fails
        in one line if it is missing or stale); an interactive run at another scale builds
        its own copy once under build/lab/artifacts/."""
        from shared import artifacts

        folder = artifacts.locate(name, self.tree, build_missing=self.interactive, progress=self.progress)
        manifest = artifacts.read_manifest(folder)
        self.log_metrics({"run": {"artifacts": {name: manifest["fingerprint"][:12]}}})  # provenance in the ledger
        return folder

    def save_figure(self, fig, name: str) -> list[Path]:
        """figures/<name>.png and .svg; in JupyterLab the figure stays open, so it shows."""
        return plotting.save(fig, self.figures_dir / _stem(name), close=not self.interactive)


def start(
    paper: str | int,
    scale: str = "",
    overrides: dict[str, Any] | None = None,
    out_dir: str = "",
    params_file: str | Path | None = None,
) -> Run:
    """Set up a notebook run of ``paper``; see the module docstring."""
    info = get_paper(paper)
    os.chdir(ROOT)
    import_paper(info.number)

    if scale:
        if scale not in config.SCALES:
            raise config.ParamError(f"scale: {scale!r} is not allowed; allowed: {', '.join(config.SCALES)}")
        tree = config.compose([f"scale={scale}"])
    else:
        # The runner names the composed file it validated (EFFLAB_PARAMS); JupyterLab uses the root one.
        tree = config.load(params_file or os.environ.get("EFFLAB_PARAMS") or config.PARAMS_FILE)
    glob, params = config.paper_params(info.number, tree, overrides)
    resolved_device = device.resolve(glob.scale.device, glob.scale.name)

    seed_everything(glob.seed)
    plotting.theme()

    interactive = not out_dir
    # Interactive runs share one folder per paper and scale, so a figures notebook opened
    # after the compute notebooks finds their tables (and never those of another scale).
    out = Path(out_dir) if out_dir else BUILD / "lab" / info.key / glob.scale.name
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    run = Run(info, params, glob.scale.name, glob.seed, resolved_device, out, interactive, tree)
    run.log_metrics({"run": {"scale": run.scale, "seed": run.seed}})  # the ledger reports the scale run
    print(
        f"{info.key} · scale={glob.scale.name} · seed={glob.seed} · device={resolved_device} · "
        f"outputs -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
    )
    return run


def seed_everything(seed: int) -> None:
    """Seed python and numpy, and torch if it is already imported (importing it here
    would cost every notebook ~2 s). Library code takes explicit seeds anyway."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _stem(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"output name {name!r}: use a plain file stem such as 'pareto_frontier'")
    return name


def _check_json_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _check_json_value(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            raise TypeError(f"metric {key!r}: an array of shape {tuple(value.shape)} is not a scalar") from None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metric {key!r}: {value} is not a finite number")
        return value
    raise TypeError(f"metric {key!r}: {type(value).__name__} is not a JSON scalar")


def _merge_json(path: Path, values: dict[str, Any]) -> None:
    for key in values:
        if not isinstance(key, str) or not key:
            raise TypeError(f"metric key {key!r}: keys are non-empty strings")
    clean = {k: _check_json_value(k, v) for k, v in values.items()}
    current = json.loads(path.read_text()) if path.exists() else {}
    _deep_update(current, clean)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def _deep_update(target: dict[str, Any], values: dict[str, Any]) -> None:
    """Nested sections merge key by key (``run`` gains ``artifacts`` beside ``scale``)."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value
