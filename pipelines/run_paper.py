"""Run one paper's notebooks headless: ``python -m pipelines.run_paper 06``.

Each notebook (``papers/NN-slug/notebooks/NN_*.py``, jupytext percent scripts) runs
in its own fresh Jupyter kernel through papermill, with the repository root as the
working directory, in file-name order. Outputs are written to a staging folder and
moved into the paper's folder only when every notebook succeeded, so a failure never
leaves partial results that look valid. On failure the executed notebook (with the
traceback in place) is kept under ``build/failed/`` and one line names the paper,
notebook and cell.

Why a fresh kernel per notebook and not a shared one: isolation (no state leaks from
one notebook into the next, exactly what a user gets in JupyterLab). Its price is
kernel start-up plus imports, ~1 s for numpy-only notebooks and ~3 s with torch, which
``shared`` keeps low by importing torch/transformers/peft only where used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from shared import config, device
from shared.paper import Paper, get_paper
from shared.paths import BUILD, PARAMS_FILE, ROOT

KERNEL = "python3"  # the name recorded in executed notebooks; the kernel itself is sys.executable
OUTPUTS = ("metrics.json", "timings.json", "results", "figures", "executed")


class NotebookFailed(RuntimeError):
    pass


def _kernel_manager(socket_dir: str):
    """A kernel manager whose kernel is this very Python (``sys.executable``), whatever
    kernelspecs named ``python3`` lie elsewhere on the Jupyter path (a ``--user`` install
    pointing at another interpreter would otherwise win), talking over Unix sockets in
    ``socket_dir``: nothing listens on a TCP port."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class ThisPythonKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self):
            return os.path.join(socket_dir, "kernel")

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name="Python (efflab)",
                    language="python",
                )
            return self._kernel_spec

    return ThisPythonKernelManager


def execute_notebook(source: Path, executed: Path, parameters: dict, socket_dir: str) -> float:
    """Execute one jupytext script into ``executed`` (.ipynb); return seconds taken."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            nb,
            str(executed),
            parameters=parameters,
            kernel_name=KERNEL,
            language="python",
            kernel_manager_class=_kernel_manager(socket_dir),
            cwd=str(ROOT),
            progress_bar=False,
            start_timeout=120,
        )
    except PapermillExecutionError as exc:
        first_line = next((ln for ln in exc.source.splitlines() if ln.strip()), "")
        raise NotebookFailed(
            f"cell {exc.cell_index} (In [{exc.exec_count}], starts `{first_line[:60]}`): {exc.ename}: "
            f"{' '.join(str(exc.evalue).split())[:300]}"
        ) from None
    except Exception as exc:  # the kernel died (OOM kill, segfault), timed out, or would not start
        raise NotebookFailed(f"kernel failure: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    return time.perf_counter() - started


def run_paper(paper: Paper, params_file: Path = PARAMS_FILE, dest: Path | None = None) -> Path:
    """Run every notebook of ``paper``; move outputs into ``dest`` (default: the paper
    folder) on success. Returns ``dest``. Raises ParamError / DeviceError before any
    kernel starts, NotebookFailed (one line) when a notebook raises."""
    dest = dest or paper.folder
    tree = config.load(params_file)
    config.validate(tree)  # the whole tree: a bad key anywhere stops every stage at once
    glob, _ = config.paper_params(paper.number, tree)
    device.resolve(glob.scale.device, glob.scale.name)
    notebooks = paper.notebooks
    if not notebooks:
        raise NotebookFailed(f"no notebooks in {paper.folder / 'notebooks'} (expected NN_name.py)")

    stage = BUILD / "stage" / paper.key
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "executed").mkdir(parents=True)
    print(f"[{paper.key}] {paper.slug} · scale={glob.scale.name} · {len(notebooks)} notebooks", flush=True)
    total = time.perf_counter()
    try:
        with _kernel_environment(params_file):
            _run_notebooks(paper, notebooks, stage)
        metrics = stage / "metrics.json"
        if not metrics.exists() or set(json.loads(metrics.read_text())) <= {"run"}:
            raise NotebookFailed(f"paper {paper.number} ({paper.slug}): no notebook called run.log_metrics")
        if not (stage / "timings.json").exists():
            (stage / "timings.json").write_text("{}\n")
        _publish(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # whatever happened, no staged leftovers
    print(f"[{paper.key}] done in {time.perf_counter() - total:.1f} s", flush=True)
    return dest


@contextlib.contextmanager
def _kernel_environment(params_file: Path):
    """Kernels inherit these: the params file validated here, a headless backend, fixed hashing."""
    values = {
        "EFFLAB_PARAMS": str(Path(params_file).resolve()),
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        "SOURCE_DATE_EPOCH": "0",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_notebooks(paper: Paper, notebooks: list[Path], stage: Path) -> None:
    for source in notebooks:
        executed = stage / "executed" / f"{source.stem}.ipynb"
        try:
            with tempfile.TemporaryDirectory(prefix="efflab-kernel-") as socket_dir:
                # All three parameters are injected, so whatever a notebook's parameters cell was
                # left at after interactive work, the pipeline runs what params.yaml says.
                parameters = {"scale": "", "overrides": {}, "out_dir": str(stage)}
                seconds = execute_notebook(source, executed, parameters, socket_dir)
        except NotebookFailed as exc:
            failed = BUILD / "failed" / paper.key / executed.name
            failed.parent.mkdir(parents=True, exist_ok=True)
            if executed.exists():
                shutil.move(executed, failed)
            raise NotebookFailed(
                f"paper {paper.number} ({paper.slug}), notebook {source.name}, {exc} "
                f"[executed notebook: {failed.relative_to(ROOT)}]"
            ) from None
        print(f"[{paper.key}]   {source.name:<32} {seconds:6.1f} s", flush=True)


def _publish(stage: Path, dest: Path) -> None:
    """Move staged outputs into ``dest``. Each is first moved beside its target (works
    across file systems), and only then swapped in, so a crash leaves the old output."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        target, incoming = dest / name, dest / f".{name}.incoming"
        _remove(incoming)
        if (stage / name).exists():
            shutil.move(str(stage / name), incoming)
        _remove(target)
        if incoming.exists():
            os.replace(incoming, target)
    shutil.rmtree(stage, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper", help="paper number (06), key (p06) or folder name")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="composed params file")
    parser.add_argument("--dest", type=Path, default=None, help="where outputs go (default: the paper folder)")
    args = parser.parse_args(argv)
    try:
        run_paper(get_paper(args.paper), args.params, args.dest)
    except (KeyError, OSError, config.ParamError, device.DeviceError, NotebookFailed) as exc:
        message = exc.args[0] if exc.args else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
