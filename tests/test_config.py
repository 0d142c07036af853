"""Every config composes; bad parameters fail in one line before any compute."""

import subprocess

import pytest
import yaml

from shared import artifacts, config
from shared.paper import all_papers
from shared.paths import CONF, ROOT

PAPERS = all_papers()
# Config groups of papers and of shared artifacts follow the same shape.
GROUPS = [*artifacts.MODULES, *(p.key for p in PAPERS)]


def _model(group: str):
    return artifacts.params_model(group) if group in artifacts.MODULES else config.params_model(
        next(p for p in PAPERS if p.key == group)
    )


@pytest.mark.parametrize("scale", config.SCALES)
def test_every_scale_composes_and_validates(scale):
    tree = config.compose([f"scale={scale}"])
    assert tree["scale"]["name"] == scale
    validated = config.validate(tree)
    assert set(validated) == {"globals", *GROUPS}


@pytest.mark.parametrize("key", GROUPS)
def test_group_has_a_config_per_scale_and_a_root_entry(key):
    group = CONF / key
    assert (group / "base.yaml").exists()
    for scale in config.SCALES:
        text = (group / f"{scale}.yaml").read_text()
        assert "base" in yaml.safe_load(text)["defaults"], f"{key}/{scale}.yaml must build on base"
    root = yaml.safe_load((CONF / "config.yaml").read_text())
    assert {key: "${scale}"} in root["defaults"]


@pytest.mark.parametrize("key", GROUPS)
def test_base_yaml_keys_are_exactly_the_params_fields(key):
    base = yaml.safe_load((CONF / key / "base.yaml").read_text())
    base.pop("defaults", None)
    assert set(base) == set(_model(key).model_fields)


def test_committed_params_yaml_is_the_smoke_composition():
    # params.yaml is generated; a hand edit (or a forgotten recompose) shows up here. It is
    # the committed file that must be smoke: the workspace may be composed at any scale.
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert yaml.safe_load(shown.stdout) == config.compose(["scale=smoke"])


def test_override_changes_one_value():
    tree = config.compose([])
    key, field, value = next(
        (key, field, value)
        for key in (p.key for p in PAPERS)
        for field, value in tree[key].items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    changed = config.compose([f"{key}.{field}={value * 2}"])
    assert changed[key][field] == value * 2
    assert {k: v for k, v in changed[key].items() if k != field} == {k: v for k, v in tree[key].items() if k != field}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scale=huge"], "scale: 'huge' is not an option; allowed: cpu, gpu, smoke"),
        (["seed=-1"], "seed: Input should be greater than or equal to 0"),
        (["scale.device=tpu"], "scale.device: Input should be 'cpu', 'cuda' or 'auto'"),
    ],
)
def test_bad_global_parameter_fails_in_one_line(overrides, message):
    with pytest.raises(config.ParamError) as err:
        config.validate(config.compose(overrides))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message)


def test_unknown_key_names_the_key_and_the_allowed_ones():
    paper = PAPERS[0]
    with pytest.raises(config.ParamError) as err:
        config.compose([f"{paper.key}.no_such_knob=1"])
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{paper.key}.no_such_knob: unknown key")
    assert next(iter(config.params_model(paper).model_fields)) in text


def test_unknown_top_level_key_is_rejected():
    tree = config.compose([])
    tree["sed"] = 1
    with pytest.raises(config.ParamError, match=r"^sed: unknown top-level key; allowed: "):
        config.validate(tree)


def test_notebook_overrides_must_name_existing_keys():
    paper = PAPERS[0]
    tree = config.compose([])
    with pytest.raises(config.ParamError, match=rf"^{paper.key}\.nope: unknown key; allowed in {paper.key}: "):
        config.paper_params(paper.number, tree, {"nope": 3})


def test_unknown_key_hints_cover_top_level_and_scale():
    with pytest.raises(config.ParamError, match=r"^sed: unknown key; allowed in the top level: .*seed"):
        config.compose(["sed=1"])
    with pytest.raises(config.ParamError, match=r"^scale\.devcie: unknown key; allowed in scale: device, name$"):
        config.compose(["scale.devcie=cpu"])


def test_notebook_overrides_reach_list_elements_and_must_be_a_dict():
    paper = PAPERS[0]
    tree = config.compose([])
    key, values = next((k, v) for k, v in tree[paper.key].items() if isinstance(v, list) and len(v) > 1)
    section = config.apply_overrides(tree[paper.key], {f"{key}.1": values[0]}, paper.key)
    assert section[key][1] == values[0] and tree[paper.key][key] == values  # the input is not mutated
    with pytest.raises(config.ParamError, match=rf"is a list of {len(values)}; use an index below it"):
        config.apply_overrides(tree[paper.key], {f"{key}.{len(values)}": 0}, paper.key)
    with pytest.raises(config.ParamError, match=r"^overrides: a dict of dotted keys"):
        config.apply_overrides(tree[paper.key], ["n=1"], paper.key)


def test_misnamed_paper_folder_is_an_error_not_a_silent_skip(tmp_path, monkeypatch):
    from shared import paper as paper_module

    (tmp_path / "07-Mixed-Case").mkdir()
    monkeypatch.setattr(paper_module, "PAPERS", tmp_path)
    with pytest.raises(RuntimeError, match=r"papers/07-Mixed-Case: name a paper folder NN-slug"):
        paper_module.all_papers()


def test_unknown_key_inside_a_dict_of_models_names_the_allowed_fields():
    # tinylm.models is dict[str, ModelSpec]: the hint must look through the dict's key.
    with pytest.raises(config.ParamError) as err:
        config.validate(config.compose(["+tinylm.models.gqa.n_head=3"]))
    message = str(err.value)
    assert message.startswith("tinylm.models.gqa.n_head: unknown key; allowed: ") and "n_heads" in message
    assert "\n" not in message
