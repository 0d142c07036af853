"""The notebook runner: publishes outputs only on success; a failure names paper,
notebook and cell and leaves nothing half-written."""

import json
import sys
from pathlib import Path

import pytest

from pipelines import run_paper as runner
from shared import config
from shared.paper import Paper, all_papers
from shared.paths import BUILD

REAL = all_papers()[0]

NOTEBOOK = '''\
# %% tags=["parameters"]
scale = ""
overrides = {{}}
out_dir = ""

# %%
from shared import notebook
run = notebook.start("{number}", scale=scale, overrides=overrides, out_dir=out_dir)

# %%
run.log_metrics({{"answer": 42}})

# %%
{last}
'''


def _fake_paper(tmp_path: Path, last_cell: str) -> Paper:
    """A paper folder in tmp with the real paper's number (so its params validate)."""
    folder = tmp_path / f"{REAL.number}-fake"
    (folder / "notebooks").mkdir(parents=True)
    (folder / "notebooks" / "01_only.py").write_text(NOTEBOOK.format(number=REAL.number, last=last_cell))
    return Paper(REAL.number, folder)


def test_success_publishes_every_output(tmp_path, smoke_params):
    paper = _fake_paper(tmp_path, "print('ok')")
    dest = runner.run_paper(paper, smoke_params, dest=tmp_path / "out")
    assert json.loads((dest / "metrics.json").read_text())["answer"] == 42
    assert json.loads((dest / "timings.json").read_text()) == {}
    assert (dest / "executed" / "01_only.ipynb").exists()
    assert not (BUILD / "stage" / paper.key).exists()


def test_failure_names_paper_notebook_cell_and_leaves_no_outputs(tmp_path, smoke_params):
    paper = _fake_paper(tmp_path, "raise ValueError('deliberate failure')")
    dest = tmp_path / "out"
    with pytest.raises(runner.NotebookFailed) as err:
        runner.run_paper(paper, smoke_params, dest=dest)
    text = str(err.value)
    assert "\n" not in text
    assert f"paper {REAL.number} ({REAL.number}-fake), notebook 01_only.py, cell " in text
    assert "ValueError: deliberate failure" in text
    assert not dest.exists(), "nothing may be published after a failure"
    assert not (BUILD / "stage" / paper.key).exists()
    assert (BUILD / "failed" / paper.key / "01_only.ipynb").exists()


def test_bad_parameter_fails_before_any_kernel_starts(tmp_path, monkeypatch, smoke_params):
    params = config.load(smoke_params)
    field = next(iter(params[REAL.key]))
    params[REAL.key][field] = "not-a-valid-value"
    bad = tmp_path / "params.yaml"
    bad.write_text(__import__("yaml").safe_dump(params))
    monkeypatch.setattr(runner, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(config.ParamError, match=rf"^{REAL.key}\.{field}: "):
        runner.run_paper(REAL, bad, dest=tmp_path / "out")


def test_cli_prints_one_error_line_and_exits_1(capsys):
    assert runner.main(["77"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: paper '77': no folder papers/77-*") and "\n" not in err


def test_notebook_without_metrics_is_a_failure(tmp_path, smoke_params):
    paper = _fake_paper(tmp_path, "pass")
    source = paper.folder / "notebooks" / "01_only.py"
    source.write_text(source.read_text().replace('run.log_metrics({"answer": 42})', "pass"))
    with pytest.raises(runner.NotebookFailed, match="no notebook called run.log_metrics"):
        runner.run_paper(paper, smoke_params, dest=tmp_path / "out")


def test_pipeline_ignores_a_parameters_cell_left_over_from_interactive_work(tmp_path, smoke_params):
    paper = _fake_paper(tmp_path, "print('ok')")
    source = paper.folder / "notebooks" / "01_only.py"
    source.write_text(source.read_text().replace('scale = ""', 'scale = "cpu"'))
    dest = runner.run_paper(paper, smoke_params, dest=tmp_path / "out")
    composed = config.load(smoke_params)["scale"]["name"]
    assert json.loads((dest / "metrics.json").read_text())["run"]["scale"] == composed


def test_a_dead_kernel_is_one_line_and_leaves_nothing(tmp_path, smoke_params):
    paper = _fake_paper(tmp_path, "import os\nos._exit(3)")
    dest = tmp_path / "out"
    with pytest.raises(runner.NotebookFailed, match=r"notebook 01_only\.py, kernel failure: DeadKernelError") as err:
        runner.run_paper(paper, smoke_params, dest=dest)
    assert "\n" not in str(err.value)
    assert not dest.exists() and not (BUILD / "stage" / paper.key).exists()


def test_kernel_is_this_python_whatever_python3_kernelspec_is_on_the_path(tmp_path, monkeypatch, smoke_params):
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps({"argv": ["/bin/false", "{connection_file}"], "display_name": "wrong", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    paper = _fake_paper(tmp_path, "import sys\nrun.log_metrics({'same_python': sys.executable == %r})" % sys.executable)
    dest = runner.run_paper(paper, smoke_params, dest=tmp_path / "out")
    assert json.loads((dest / "metrics.json").read_text())["same_python"] is True
