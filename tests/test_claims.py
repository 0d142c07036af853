import pytest

from shared import claims as ledger
from shared.paper import all_papers


@pytest.mark.parametrize(
    ("check", "value", "holds"),
    [
        ("<= 0.5", 0.5, True),
        ("<= 0.5", 0.51, False),
        ("< 0.5", 0.5, False),
        (">= 1.2", 1.3, True),
        ("> -1e-3", 0.0, True),
        ("in [0.55, 0.65]", 0.6, True),
        ("in [0.55, 0.65]", 0.66, False),
    ],
)
def test_checks(check, value, holds):
    assert ledger.parse_check(check)(value) is holds


@pytest.mark.parametrize("bad", ["~ 3", "<= ", "in [2, 1]", "0.5"])
def test_bad_checks_are_rejected(bad):
    with pytest.raises(ValueError):
        ledger.parse_check(bad)


def _claim(**kw):
    base = dict(
        id="a-claim",
        claim="something the paper says",
        paper_value="2x",
        source="Table 1",
        metric="speedup",
        check=">= 1.5",
        expected_at=["cpu"],
    )
    return ledger.Claim(**{**base, **kw})


def test_evaluate_statuses():
    claim = _claim()
    assert ledger.evaluate(claim, {"speedup": 2.0}) == (2.0, ledger.HOLDS)
    assert ledger.evaluate(claim, {"speedup": 1.0}) == (1.0, ledger.FAILS)
    assert ledger.evaluate(claim, {}) == (None, ledger.NOT_RUN)
    timed = _claim(metric="timings.speedup")
    assert ledger.evaluate(timed, {"timings": {"speedup": 3}}) == (3, ledger.HOLDS)
    assert ledger.evaluate(timed, {"speedup": 3}) == (None, ledger.NOT_RUN)
    with pytest.raises(TypeError):
        ledger.evaluate(claim, {"speedup": "fast"})
    # a paper that ran but lacks the metric: a typo, never silently "not run"
    with pytest.raises(ValueError, match=r"'speedup' is not among the run's metrics: \['sped_up'\]"):
        ledger.evaluate(claim, {"run": {"scale": "smoke"}, "sped_up": 2.0})
    # ... but one it logged as null (it could not measure it, and said why) is "not run"
    assert ledger.evaluate(timed, {"run": {"scale": "smoke"}, "timings": {"speedup": None}}) == (None, ledger.NOT_RUN)


def test_claim_schema_rejects_bad_entries():
    with pytest.raises(ValueError):
        _claim(id="Not Kebab")
    with pytest.raises(ValueError):
        _claim(check="about 2")
    with pytest.raises(ValueError):
        _claim(expected_at=["tpu"])
    with pytest.raises(ValueError):
        _claim(extra_field=1)


@pytest.mark.parametrize("paper", all_papers(), ids=lambda p: p.key)
def test_every_paper_claims_file_is_valid(paper):
    spec = ledger.load_claims(paper)
    assert spec.paper == paper.number
    for claim in spec.claims:
        if set(claim.expected_at) != {"smoke", "cpu", "gpu"}:
            # leaving a scale out is a decision that must be explained
            assert claim.note.strip(), f"{claim.id}: expected_at leaves a scale out without a note"


README_WITH_BLOCKS = """# 99 · A paper
<!-- ledger:begin smoke -->
Scale run: **smoke**

| claim | paper (source) | ours | check | status |
|---|---|---|---|---|
| `a` | 1 (T1) | 1 | `m` >= 1 | ✅ holds |
| `b` | 2 (T2) | 0 | `n` >= 1 | ❌ does not hold (not expected at this scale) |
| `c` | 3 (T3) | — | `o` >= 1 | ⏸ not run (not expected at this scale) |
<!-- ledger:end smoke -->
<!-- ledger:begin cpu -->
<!-- ledger:end cpu -->
"""


def test_readme_counts_reads_each_scale_block():
    from pipelines.claims import readme_counts

    assert readme_counts(README_WITH_BLOCKS) == {"smoke": (1, 3), "cpu": None, "gpu": None}


def test_top_readme_table_is_rewritten_between_its_markers(tmp_path, monkeypatch):
    import pipelines.claims as tool

    (tmp_path / "papers" / "99-a").mkdir(parents=True)
    (tmp_path / "papers" / "99-a" / "README.md").write_text(README_WITH_BLOCKS)
    (tmp_path / "README.md").write_text(f"intro\n{tool.TABLE_BEGIN}\nOLD ROW\n{tool.TABLE_END}\nrest\n")
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    report = {"papers": [{"paper": "99", "title": "A paper", "folder": "papers/99-a"}]}
    assert tool.update_top_readme(report)
    text = (tmp_path / "README.md").read_text()
    assert "| 99. A paper | [papers/99-a](papers/99-a) | 1/3 | — | — |" in text
    assert "OLD ROW" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert not tool.update_top_readme(report)  # unchanged the second time
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="papers:begin"):
        tool.update_top_readme(report)


def test_claims_tool_names_an_unknown_paper(capsys):
    from pipelines.claims import main

    assert main(["--papers", "00"]) == 1
    assert "--papers: no paper folder numbered 00" in capsys.readouterr().err
