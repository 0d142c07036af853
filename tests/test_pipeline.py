"""Checks on the outputs of `dvc repro` (run first: `make test` does both)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import run_paper as runner
from shared import claims as ledger
from shared.paper import all_papers
from shared.paths import PARAMS_FILE, REPORTS, ROOT

pytestmark = pytest.mark.pipeline
PAPERS = all_papers()
DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def report():
    path = REPORTS / "claims.json"
    if not path.exists():
        pytest.fail("reports/claims.json missing: run `make repro` (or `dvc repro`) first")
    return json.loads(path.read_text())


def test_every_paper_ran_and_is_in_the_ledger(report):
    assert [p["paper"] for p in report["papers"]] == [p.number for p in PAPERS]
    for paper in report["papers"]:
        assert paper["scale"] is not None, f"paper {paper['paper']} has not run"


def test_every_claim_expected_at_this_scale_holds(report):
    failing = [
        f"{p['paper']}/{c['id']}: ours={c['ours']} vs check {c['metric']} {c['check']} ({c['status']})"
        for p in report["papers"]
        for c in p["claims"]
        if c["expected_here"] and c["status"] != ledger.HOLDS
    ]
    assert not failing, "\n".join(failing)


def test_dvc_status_is_clean():
    out = subprocess.run([DVC, "status", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    status = json.loads(out.stdout or "{}")
    # A stage whose input lies outside the repo (the corpus reads the installed stdlib) is
    # "always changed" by design; anything else out of date is a failure.
    stale = {stage: what for stage, what in status.items() if what != ["always changed"]}
    assert stale == {}, out.stdout


@pytest.mark.parametrize("paper", PAPERS, ids=lambda p: p.key)
def test_readme_shows_every_figure_and_every_claim(paper):
    readme = (paper.folder / "README.md").read_text()
    figures = sorted((paper.folder / "figures").glob("*.png"))
    assert figures, f"{paper.slug} produced no figures"
    for fig in figures:
        assert f"figures/{fig.name}" in readme, f"README does not show {fig.name}"
    for claim in ledger.load_claims(paper).claims:
        assert f"`{claim.id}`" in readme, f"README ledger lacks {claim.id}: run `make report`"


def test_same_params_and_seed_give_identical_metrics(tmp_path):
    # Rerun the first paper into a scratch folder; its metrics.json must match the
    # pipeline's byte for byte (wall-clock numbers live in timings.json instead).
    paper = PAPERS[0]
    dest = runner.run_paper(paper, PARAMS_FILE, dest=tmp_path / paper.key)
    assert (dest / "metrics.json").read_text() == (paper.folder / "metrics.json").read_text()


def test_changing_one_papers_parameter_invalidates_only_that_paper():
    paper = PAPERS[0]
    original = PARAMS_FILE.read_text()
    tree = yaml.safe_load(original)
    field, value = next((k, v) for k, v in tree[paper.key].items() if isinstance(v, int) and not isinstance(v, bool))
    tree[paper.key][field] = value + 1
    try:
        PARAMS_FILE.write_text(yaml.safe_dump(tree, sort_keys=False))
        out = subprocess.run([DVC, "status", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
        stale = set(json.loads(out.stdout))
    finally:
        PARAMS_FILE.write_text(original)
    others = {p.key for p in PAPERS} - {paper.key}
    assert paper.key in stale and not (stale & others), stale


def test_editing_a_shared_module_invalidates_only_the_papers_that_import_it():
    from pipelines import dvcgen

    users = {p.key for p in PAPERS if "shared/complexity.py" in dvcgen.paper_stage(p)["deps"]}
    module = ROOT / "shared" / "complexity.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# an edit\n")
        out = subprocess.run([DVC, "status", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
        stale = set(json.loads(out.stdout)) & {p.key for p in PAPERS}
    finally:
        module.write_text(original)
    assert stale == users
