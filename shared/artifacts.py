"""Artifacts: build products several papers share (a corpus, trained models), built once.

An artifact is a module of ``shared`` listed in :data:`MODULES`. It defines

    ARTIFACT = "tinylm"              # its name (params.yaml key, config group pipelines/conf/tinylm/)
    REQUIRES = ("corpus",)           # artifacts it reads
    class Params(BaseModel): ...     # its parameters (extra keys forbidden)
    def build(params, out, inputs, seed, progress) -> dict   # writes into `out`; returns a summary

The pipeline builds each one as its own DVC stage (``python -m pipelines.build_artifact
tinylm``) into ``build/artifacts/<name>/``, so a paper whose parameters change reruns its
notebooks but never retrains the models it reads. Every build writes ``manifest.json``
with a *fingerprint*: a hash of the artifact's parameters, the seed and the fingerprints
of what it requires. A notebook asks for an artifact with ``run.artifact("tinylm")``:

- in a pipeline run the folder must exist and match the composed parameters (DVC built
  it first; a mismatch is an error, never a silent retrain);
- in an interactive run at another scale or with other parameters, it is built once into
  ``build/lab/artifacts/<name>-<fingerprint>/`` and reused from there afterwards.

Builds go to a staging folder that is kept when a build fails or is interrupted, so a
resumable builder (the tiny-LM trainer) continues where it stopped; the finished folder
replaces the old one only after the build succeeded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from pydantic import BaseModel

from shared.paths import BUILD
from shared.progress import bar

# name -> module; the order is the build order (an artifact after those it requires). One
# module may build several artifacts, each with its own config group (the lmgrid sweeps).
MODULES: dict[str, str] = {
    "corpus": "shared.corpus",
    "tinylm": "shared.tinylm",
    "scaling_grid": "shared.lmgrid",  # sizes x token budgets (papers 17, ...)
    "parscale_grid": "shared.lmgrid",  # sizes x ParScale streams (paper 18)
    "reasoning": "shared.reasoning",  # arithmetic-chain policies + PRM (papers 08, 10, 13, 20, 24, 34)
}
ARTIFACTS_DIR = BUILD / "artifacts"  # the pipeline's copies (DVC outputs)
LAB_DIR = BUILD / "lab" / "artifacts"  # interactive builds, one folder per fingerprint
STAGING_DIR = BUILD / "staging" / "artifacts"
MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    """A missing, stale or failed artifact; the message is one line."""


def module(name: str) -> ModuleType:
    if name not in MODULES:
        raise ArtifactError(f"artifact {name!r}: unknown; known: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name])


def requires(name: str) -> tuple[str, ...]:
    return tuple(getattr(module(name), "REQUIRES", ()))


def params_model(name: str) -> type[BaseModel]:
    return module(name).Params


def fingerprint(name: str, tree: dict[str, Any]) -> str:
    """Hash of the validated parameters of ``name``, the seed and its requirements' fingerprints."""
    from shared.config import ParamError, validate_section

    if name not in tree:
        raise ParamError(f"{name}: missing; add `- {name}: ${{scale}}` to pipelines/conf/config.yaml")
    params = validate_section(params_model(name), tree[name], name)
    payload = {
        "artifact": name,
        "params": params.model_dump(mode="json"),
        "seed": tree.get("seed"),
        "requires": {req: fingerprint(req, tree) for req in requires(name)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def locate(name: str, tree: dict[str, Any], build_missing: bool, progress: Callable | None = None) -> Path:
    """The folder of artifact ``name`` built with the parameters of ``tree``.

    The pipeline's copy when its fingerprint matches; otherwise, with ``build_missing``,
    a lab copy (built now if absent); otherwise an :class:`ArtifactError`."""
    want = fingerprint(name, tree)
    pipeline_copy = ARTIFACTS_DIR / name
    manifest = read_manifest(pipeline_copy)
    if manifest is not None and manifest.get("fingerprint") == want:
        return pipeline_copy
    lab_copy = LAB_DIR / f"{name}-{want[:12]}"
    manifest = read_manifest(lab_copy)
    if manifest is not None and manifest.get("fingerprint") == want:
        return lab_copy
    if not build_missing:
        why = "is missing" if not pipeline_copy.exists() else "was built with other parameters"
        raise ArtifactError(f"artifact {name}: {pipeline_copy} {why}; build it with `dvc repro {name}`")
    inputs = {req: locate(req, tree, build_missing, progress) for req in requires(name)}
    print(f"building artifact {name} for these parameters into {lab_copy} (once; reused afterwards)")
    return build(name, tree, lab_copy, inputs, progress)


def build(
    name: str,
    tree: dict[str, Any],
    dest: Path,
    inputs: dict[str, Path],
    progress: Callable | None = None,
) -> Path:
    """Build ``name`` into ``dest`` through a resumable staging folder; return ``dest``."""
    from shared.config import validate_section

    want = fingerprint(name, tree)
    params = validate_section(params_model(name), tree[name], name)
    for req, folder in inputs.items():
        have = (read_manifest(folder) or {}).get("fingerprint")
        if have != fingerprint(req, tree):
            raise ArtifactError(f"artifact {name}: its input {req} at {folder} is stale; build it with `dvc repro {req}`")
    staging = STAGING_DIR / f"{name}-{want[:12]}"  # kept after a failure: resumable builders continue
    STAGING_DIR.mkdir(parents=True, exist_ok=True)
    with _exclusive(staging.with_suffix(".lock")):
        # One builder per fingerprint: a second process (a notebook while `dvc repro` runs) waits
        # here, then finds the first one's result instead of building over it.
        done = read_manifest(dest)
        if done is not None and done.get("fingerprint") == want:
            return dest
        staging.mkdir(parents=True, exist_ok=True)
        _build_staged(name, params, want, staging, dest, inputs, int(tree.get("seed", 0)), progress)
    return dest


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    import fcntl

    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_staged(name, params, want, staging: Path, dest: Path, inputs, seed: int, progress) -> None:
    summary = module(name).build(params, staging, dict(inputs), seed, progress or bar)
    manifest = {
        "artifact": name,
        "fingerprint": want,
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "inputs": {req: read_manifest(folder)["fingerprint"] for req, folder in inputs.items()},
        "summary": summary,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(dest))


def build_into(name: str, params: dict[str, Any], out: Path, inputs: dict[str, Path] | None = None, seed: int = 0):
    """Build one artifact straight into ``out`` from a params dict (tests, scripts)."""
    from shared.config import validate_section

    validated = validate_section(params_model(name), params, name)
    out.mkdir(parents=True, exist_ok=True)
    return module(name).build(validated, out, dict(inputs or {}), seed, bar)
