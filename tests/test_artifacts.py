"""Shared artifacts: fingerprints, located vs built, staging, and their DVC stages."""

import sys
import types

import pytest
from pydantic import BaseModel, ConfigDict

from pipelines import dvcgen
from shared import artifacts


def _fake_module(name, requires=(), fail_at=None, calls=None):
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        size: int

    def build(params, out, inputs, seed, progress):
        calls.append(name)
        (out / "partial.txt").write_text("started")  # what a resumable builder keeps in staging
        if fail_at == params.size:
            raise RuntimeError("boom")
        upstream = {k: (v / "value.txt").read_text() for k, v in inputs.items()}
        (out / "value.txt").write_text(f"{name}:{params.size}:{seed}:{sorted(upstream.items())}")
        return {"size": params.size}

    mod = types.ModuleType(f"fake_artifacts.{name}")
    mod.ARTIFACT, mod.REQUIRES, mod.Params, mod.build = name, tuple(requires), Params, build
    return mod


@pytest.fixture
def fake(monkeypatch, tmp_path):
    calls = []
    mods = {"base": _fake_module("base", calls=calls), "top": _fake_module("top", ("base",), fail_at=13, calls=calls)}
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, f"fake_artifacts.{name}", mod)
    monkeypatch.setattr(artifacts, "MODULES", {name: f"fake_artifacts.{name}" for name in mods})
    monkeypatch.setattr(artifacts, "ARTIFACTS_DIR", tmp_path / "artifacts")
    monkeypatch.setattr(artifacts, "LAB_DIR", tmp_path / "lab")
    monkeypatch.setattr(artifacts, "STAGING_DIR", tmp_path / "staging")
    return calls


def _tree(base=1, top=2, seed=0):
    return {"seed": seed, "base": {"size": base}, "top": {"size": top}}


def test_fingerprint_follows_params_seed_and_requirements(fake):
    fp = artifacts.fingerprint
    assert fp("top", _tree()) == fp("top", _tree())
    assert fp("top", _tree(top=3)) != fp("top", _tree())
    assert fp("top", _tree(seed=1)) != fp("top", _tree())
    assert fp("top", _tree(base=5)) != fp("top", _tree()), "a changed requirement changes the dependent"
    assert fp("base", _tree(top=9)) == fp("base", _tree()), "a dependent's params do not touch its input"


def test_pipeline_mode_never_builds_and_names_the_dvc_command(fake):
    with pytest.raises(artifacts.ArtifactError, match=r"artifact top: .* is missing; build it with `dvc repro top`"):
        artifacts.locate("top", _tree(), build_missing=False)
    assert fake == []


def test_pipeline_copy_is_used_when_current_and_refused_when_stale(fake):
    tree = _tree()
    base = artifacts.build("base", tree, artifacts.ARTIFACTS_DIR / "base", {})
    artifacts.build("top", tree, artifacts.ARTIFACTS_DIR / "top", {"base": base})
    assert artifacts.locate("top", tree, build_missing=False) == artifacts.ARTIFACTS_DIR / "top"
    with pytest.raises(artifacts.ArtifactError, match="built with other parameters"):
        artifacts.locate("top", _tree(top=7), build_missing=False)
    with pytest.raises(artifacts.ArtifactError, match="its input base .* is stale"):
        artifacts.build("top", _tree(base=4), artifacts.ARTIFACTS_DIR / "top", {"base": base})


def test_interactive_mode_builds_once_per_fingerprint_with_requirements(fake):
    folder = artifacts.locate("top", _tree(top=5), build_missing=True)
    assert folder.parent == artifacts.LAB_DIR and fake == ["base", "top"]
    assert (folder / "value.txt").read_text() == "top:5:0:[('base', 'base:1:0:[]')]"
    assert artifacts.locate("top", _tree(top=5), build_missing=True) == folder
    assert fake == ["base", "top"], "the second call reuses the lab copy"
    artifacts.locate("top", _tree(top=6), build_missing=True)
    assert fake == ["base", "top", "top"], "other params: the dependent is rebuilt, its input reused"


def test_failed_build_keeps_staging_and_leaves_the_old_output(fake):
    tree = _tree()
    base = artifacts.build("base", tree, artifacts.ARTIFACTS_DIR / "base", {})
    dest = artifacts.build("top", tree, artifacts.ARTIFACTS_DIR / "top", {"base": base})
    before = (dest / "value.txt").read_text()
    with pytest.raises(RuntimeError, match="boom"):
        artifacts.build("top", _tree(top=13), dest, {"base": base})
    assert (dest / "value.txt").read_text() == before
    staged = [p for p in artifacts.STAGING_DIR.glob("top-*") if p.is_dir()]
    assert len(staged) == 1 and (staged[0] / "partial.txt").exists(), "staging survives for a resume"


def test_dvcgen_finds_artifact_calls_and_rejects_unknown_names(tmp_path):
    nb = tmp_path / "nb.py"
    nb.write_text('corpus = run.artifact("corpus")\nx = run.artifact(name)\nmodels = run.artifact("tinylm")\n')
    assert dvcgen.artifacts_used([nb]) == ["corpus", "tinylm"]
    nb.write_text('run.artifact("nope")\n')
    with pytest.raises(SystemExit, match="artifact 'nope' is unknown"):
        dvcgen.artifacts_used([nb])


def test_artifact_stages_chain_and_papers_depend_on_what_they_read():
    stages = __import__("yaml").safe_load(dvcgen.render())["stages"]
    for name in artifacts.MODULES:
        stage = stages[name]
        assert stage["outs"] == [f"build/artifacts/{name}"]
        assert stage["params"] == ["seed", name]
        for req in artifacts.requires(name):
            assert f"build/artifacts/{req}" in stage["deps"]
    assert list(stages)[: len(artifacts.MODULES)] == list(artifacts.MODULES)


def test_concurrent_builds_of_one_fingerprint_build_once(fake, monkeypatch):
    # A notebook and `dvc repro` (or two notebooks) asking for the same artifact at once: the
    # second waits for the first and reuses its result instead of building over it.
    import threading
    import time

    slow = _fake_module("base", calls=fake)
    inner = slow.build

    def build_slowly(*args):
        time.sleep(0.3)
        return inner(*args)

    monkeypatch.setattr(slow, "build", build_slowly)
    monkeypatch.setitem(sys.modules, "fake_artifacts.base", slow)
    dest = artifacts.ARTIFACTS_DIR / "base"
    threads = [threading.Thread(target=artifacts.build, args=("base", _tree(), dest, {})) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake == ["base"] and (dest / "value.txt").exists()
