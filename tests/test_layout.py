"""Every paper folder has the same shape; notebooks carry no outputs; generated files are current."""

import ast
import subprocess

import jupytext
import pytest
import yaml

from pipelines import dvcgen
from shared.paper import all_papers
from shared.paths import ROOT

PAPERS = all_papers()
NOTEBOOKS = [nb for p in PAPERS for nb in p.notebooks] + sorted((ROOT / "notebooks").glob("*.py"))
SCALES = ("smoke", "cpu", "gpu")


@pytest.mark.parametrize("paper", PAPERS, ids=lambda p: p.key)
def test_paper_folder_shape(paper):
    for name in ("README.md", "claims.yaml", "config.py"):
        assert (paper.folder / name).is_file(), f"{paper.slug}/{name} is missing"
    assert paper.notebooks, f"{paper.slug}/notebooks has no NN_name.py notebooks"
    readme = (paper.folder / "README.md").read_text()
    for scale in SCALES:
        assert f"<!-- ledger:begin {scale} -->" in readme and f"<!-- ledger:end {scale} -->" in readme
    top = (ROOT / "README.md").read_text()
    assert f"| {paper.number}. " in top and f"]({paper.folder.relative_to(ROOT).as_posix()})" in top, (
        f"README.md's paper table lacks {paper.slug}: python -m pipelines.claims --readmes"
    )


def test_no_notebook_with_outputs_in_git():
    # Notebooks live in git only as jupytext percent scripts: no .ipynb, so no outputs.
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout.split() == []


def _code_cells(path):
    return [c for c in jupytext.read(path).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_parameters_cell_holds_literals_only(path):
    cells = _code_cells(path)
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged parameters"
    assert cells[0] is tagged[0], "the parameters cell is the first code cell"
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign), f"line {node.lineno}: only assignments"
        ast.literal_eval(node.value)  # raises on anything but a literal


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_papermill_reads_every_parameter(path):
    # papermill skips a line it cannot parse (an "=" inside the comment, say); then
    # `papermill --help-notebook` and type inference silently lose that parameter.
    from papermill.translators import PythonTranslator

    cell = _code_cells(path)[0]
    assigned = [t.id for n in ast.parse(cell.source).body for t in n.targets]  # type: ignore[attr-defined]
    assert [p.name for p in PythonTranslator.inspect(cell)] == assigned


@pytest.mark.parametrize("path", [nb for p in PAPERS for nb in p.notebooks], ids=lambda p: p.name)
def test_paper_notebooks_start_through_shared_notebook(path):
    cells = _code_cells(path)
    assert {"scale", "overrides", "out_dir"} == {
        t.id for n in ast.parse(cells[0].source).body for t in n.targets  # type: ignore[attr-defined]
    }
    assert "notebook.start(" in cells[1].source


def test_dvc_yaml_is_generated_from_the_paper_folders():
    assert (ROOT / "dvc.yaml").read_text() == dvcgen.render(), "run `python -m pipelines.dvcgen`"


def test_environment_yml_installs_the_project_from_pyproject():
    # conda and pip users get the same dependency list: environment.yml names none itself.
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert all(d.split("=")[0] in {"python", "pip"} for d in conda_deps)
    pip_deps = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_deps == ["-e .[dev]"]


def test_paper_stages_depend_on_the_shared_modules_they_import_transitively(tmp_path):
    uses_complexity = tmp_path / "a.py"
    uses_complexity.write_text("from shared import complexity\n")
    assert dvcgen.shared_deps([uses_complexity]) == ["shared/__init__.py", "shared/complexity.py"]
    uses_notebook = tmp_path / "b.py"
    uses_notebook.write_text("import shared.notebook as nb\n")
    deps = set(dvcgen.shared_deps([uses_notebook]))
    # notebook -> config -> paper -> paths, notebook -> device, plotting: followed through shared
    assert {"shared/notebook.py", "shared/config.py", "shared/paper.py", "shared/paths.py", "shared/device.py"} <= deps
    assert "shared/complexity.py" not in deps and "shared/claims.py" not in deps
