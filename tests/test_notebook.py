import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from shared import device, notebook, plotting
from shared.paper import all_papers

PAPER = all_papers()[0]


@pytest.fixture
def run(tmp_path, smoke_params):
    return notebook.start(PAPER.number, out_dir=str(tmp_path), params_file=smoke_params)


def test_start_validates_seeds_and_records_the_scale(run, tmp_path):
    assert run.scale == "smoke" and run.device == "cpu" and not run.interactive
    assert np.random.rand() == np.random.RandomState(run.seed).rand()
    assert json.loads((tmp_path / "metrics.json").read_text())["run"] == {"scale": "smoke", "seed": 0}


def test_interactive_runs_write_under_build_lab_and_later_notebooks_see_earlier_tables(
    tmp_path, monkeypatch, smoke_params
):
    monkeypatch.setattr(notebook, "BUILD", tmp_path)
    first = notebook.start(PAPER.number, params_file=smoke_params)
    assert first.interactive and first.out_dir == tmp_path / "lab" / PAPER.key / "smoke"
    first.save_table(pd.DataFrame({"x": [7]}), "from_first_notebook")
    second = notebook.start(PAPER.number, params_file=smoke_params)  # e.g. the figures notebook, opened next
    assert second.load_table("from_first_notebook")["x"].tolist() == [7]
    other_scale = notebook.start(PAPER.number, scale="cpu")
    with pytest.raises(FileNotFoundError):
        other_scale.load_table("from_first_notebook")  # tables of one scale never leak into another


def test_metrics_merge_and_reject_non_finite(run, tmp_path):
    run.log_metrics({"a": 1.5})
    run.log_metrics({"b": np.float32(2.0)})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"run": {"scale": "smoke", "seed": 0}, "a": 1.5, "b": 2.0}
    with pytest.raises(ValueError, match="'bad'.*not a finite number"):
        run.log_metrics({"bad": float("nan")})
    with pytest.raises(TypeError):
        run.log_metrics({"arr": [1, 2]})
    with pytest.raises(TypeError, match="'vec': an array of shape \\(2,\\)"):
        run.log_metrics({"vec": np.zeros(2)})
    with pytest.raises(TypeError, match="keys are non-empty strings"):
        run.log_metrics({3: 1.0})


def test_tables_round_trip_and_missing_table_names_what_exists(run):
    run.save_table(pd.DataFrame({"x": [1, 2]}), "grid")
    assert run.load_table("grid")["x"].tolist() == [1, 2]
    with pytest.raises(FileNotFoundError, match=r"have: \['grid'\]"):
        run.load_table("other")


def test_figures_are_byte_stable(tmp_path):
    def draw():
        plotting.theme()
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [3, 1, 2], label="a")
        ax.legend()
        return fig

    first = [p.read_bytes() for p in plotting.save(draw(), tmp_path / "a" / "fig")]
    second = [p.read_bytes() for p in plotting.save(draw(), tmp_path / "b" / "fig")]
    assert first == second and all(first)


def test_figure_names_with_dots_keep_their_whole_name(tmp_path):
    paths = plotting.save(plt.figure(), tmp_path / "keep_f0.1") + plotting.save(plt.figure(), tmp_path / "keep_f0.2")
    assert sorted(p.name for p in paths) == ["keep_f0.1.png", "keep_f0.1.svg", "keep_f0.2.png", "keep_f0.2.svg"]


def test_bad_notebook_override_fails_before_compute(smoke_params):
    with pytest.raises(Exception, match=rf"^{PAPER.key}\.no_such: unknown key"):
        notebook.start(PAPER.number, overrides={"no_such": 1}, params_file=smoke_params)


def test_gpu_scale_without_cuda_is_one_clear_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(device.DeviceError, match="needs a CUDA GPU") as err:
        device.resolve("cuda")
    assert "\n" not in str(err.value)
    assert device.resolve("auto") == "cpu"
