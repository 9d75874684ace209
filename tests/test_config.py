"""Profiles load, merge over default and are validated with messages naming file, key and range."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from brainmri import config
from brainmri.config import ParamError, load_profile


@pytest.fixture()
def params_root(tmp_path, project_root) -> Path:
    """A project root holding a copy of the real params/ folder."""
    shutil.copytree(project_root / "params", tmp_path / "params")
    return tmp_path


@pytest.mark.parametrize("profile", ["demo", "smoke", "cpu"])
def test_every_shipped_profile_validates_and_changes_something(profile, project_root):
    params = load_profile(profile, root=project_root)
    default = load_profile("default", root=project_root)
    assert params["description"] and params["description"] != default["description"]
    changed = {
        k for k, v in config.flat_params(params).items() if config.flat_params(default)[k] != v
    }
    assert changed, f"{profile} repeats the default profile"


def test_default_is_the_reference_recipe(project_root):
    p = load_profile("default", root=project_root)
    assert p["model"]["backbone"] == "efficientnet_b1" and p["model"]["image_size"] == 240
    assert p["train"]["batch_size"] == 32 and p["train"]["epochs"] == 50
    assert p["train"]["learning_rate"] == pytest.approx(1e-4)
    assert (p["train"]["early_stopping_patience"], p["train"]["reduce_lr_patience"]) == (5, 3)
    assert p["train"]["reduce_lr_factor"] == pytest.approx(0.3)
    assert p["train"]["aug_rotation"] == 10 and p["train"]["aug_fill_mode"] == "nearest"
    assert p["gradcam"]["interpolant"] == 0.5


def test_profile_lists_only_overrides(project_root):
    demo = load_profile("demo", root=project_root)
    default = load_profile("default", root=project_root)
    assert demo["model"]["backbone"] == "compact_cnn"
    assert demo["train"]["reduce_lr_factor"] == default["train"]["reduce_lr_factor"]


def write(root: Path, text: str) -> None:
    (root / "params" / "bad.yaml").write_text(text)


def test_unknown_key_names_file_and_key(params_root):
    write(params_root, "train:\n  epocs: 3\n")
    with pytest.raises(ParamError) as err:
        load_profile("bad", root=params_root)
    msg = str(err.value)
    assert "bad.yaml" in msg and "train.epocs" in msg and "epochs" in msg


def test_key_in_wrong_section_is_pointed_out(params_root):
    write(params_root, "train:\n  image_size: 64\n")
    with pytest.raises(ParamError, match="belongs in 'model'"):
        load_profile("bad", root=params_root)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("train:\n  epochs: -1\n", "an integer in [1, 1000]"),
        ("train:\n  epochs: 2.5\n", "an integer"),
        ("model:\n  backbone: vgg16\n", "one of 'efficientnet_b0'"),
        ("train:\n  aug_horizontal_flip: 'yes'\n", "true or false"),
        ("model:\n  dense_units: []\n", "a list of ints"),
        ("gradcam:\n  cam_methods_compare: [gradcam, lime]\n", "lime"),
        ("data:\n  val_fraction: 0.9\n", "a number in [0.02, 0.5]"),
    ],
)
def test_wrong_values_are_rejected_with_the_allowed_range(params_root, text, fragment):
    write(params_root, text)
    with pytest.raises(ParamError) as err:
        load_profile("bad", root=params_root)
    assert "bad.yaml" in str(err.value) and fragment in str(err.value)


def test_unknown_section_and_bad_yaml(params_root):
    write(params_root, "training:\n  epochs: 3\n")
    with pytest.raises(ParamError, match="unknown section 'training'"):
        load_profile("bad", root=params_root)
    write(params_root, "train: [unclosed\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load_profile("bad", root=params_root)


def test_exponents_without_a_dot_are_numbers(params_root):
    """``3e-5`` is a float, as in YAML 1.2 and in papers; PyYAML alone reads a string."""
    write(params_root, "train:\n  learning_rate: 3e-5\n  guidance_learning_rate: 1E-6\n")
    p = load_profile("bad", root=params_root)
    assert p["train"]["learning_rate"] == 3e-5 and p["train"]["guidance_learning_rate"] == 1e-6
    assert config.parse_yaml("[1e-3, 2, 0.5, .5, 1.2.3, e5, '1e-3', true]") == [
        1e-3,
        2,
        0.5,
        0.5,
        "1.2.3",
        "e5",
        "1e-3",
        True,
    ]


def test_missing_profile_lists_known_ones(params_root):
    with pytest.raises(ParamError, match="known profiles"):
        load_profile("nope", root=params_root)


def test_overrides_are_validated(params_root):
    assert load_profile("smoke", root=params_root, overrides={"epochs": 3})["train"]["epochs"] == 3
    with pytest.raises(ParamError, match="unknown parameter"):
        load_profile("smoke", root=params_root, overrides={"nope": 1})
    with pytest.raises(ParamError, match="epochs"):
        load_profile("smoke", root=params_root, overrides={"epochs": 0})


def test_int_widens_to_float_but_bool_is_not_a_number(params_root):
    write(params_root, "train:\n  learning_rate: 1\n")
    assert load_profile("bad", root=params_root)["train"]["learning_rate"] == 1.0
    write(params_root, "train:\n  learning_rate: true\n")
    with pytest.raises(ParamError):
        load_profile("bad", root=params_root)


def test_stage_params_are_flat_and_disjoint(project_root):
    params = load_profile("default", root=project_root)
    train = config.stage_params(params, "03_train")
    assert "epochs" in train and "backbone" in train and "seed" in train
    assert "interpolant" not in train
    assert config.stage_params(params, "05_gradcam")["interpolant"] == 0.5


def test_notebook_config_validates_injected_values(project_root):
    values = config.stage_params(load_profile("smoke", root=project_root), "05_gradcam")
    assert config.notebook_config("05_gradcam", values)["interpolant"] == 0.5
    with pytest.raises(ParamError, match="interpolant"):
        config.notebook_config("05_gradcam", {**values, "interpolant": 2.0})


def test_paths_are_derived_from_root_and_profile(tmp_path):
    p = config.Paths(tmp_path, "demo")
    assert p.run_dir == tmp_path / "reports" / "demo"
    assert p.executed("03_train") == p.run_dir / "03_train.ipynb"
    assert p.stage_metrics("04_evaluate").parent == p.run_dir / "metrics"


def test_stage_table_is_consistent():
    """Each stage is declared once; upstream stages run first; outputs name real paths."""
    names = [s.name for s in config.PIPELINE]
    assert tuple(names) == config.STAGES and len(set(names)) == len(names)
    assert len({s.metrics_key for s in config.PIPELINE}) == len(names)
    probe = config.Paths(root=Path("/project"), profile="demo")
    for position, stage in enumerate(config.PIPELINE):
        assert stage.sections[0] == "run" and set(stage.sections) <= set(config.SCHEMA)
        assert set(stage.upstream) <= set(names[:position]), f"{stage.name} reads a later stage"
        for output in stage.outputs:
            assert isinstance(getattr(probe, output), Path), f"{stage.name}: {output}"
        assert config.get_stage(stage.name) is stage


def test_every_parameter_section_reaches_a_stage():
    """A section no stage receives would be a parameter that changes nothing."""
    received = {section for stage in config.PIPELINE for section in stage.sections}
    assert received == set(config.SCHEMA)


def test_unknown_stage_is_named():
    with pytest.raises(KeyError, match="unknown stage '06_x'.*01_download"):
        config.get_stage("06_x")
