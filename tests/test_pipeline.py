"""End to end: `make all PROFILE=smoke` in a temporary copy, incrementality and failures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pytest

from brainmri import data
from brainmri.choice import choose_profile
from brainmri.config import PIPELINE, STAGES, TUMOUR_CLASSES
from brainmri.reports import embedded_images

pytestmark = pytest.mark.slow


def stage_mtimes(run_dir: Path) -> dict[str, float]:
    return {s: (run_dir / f"{s}.ipynb").stat().st_mtime for s in STAGES}


@pytest.fixture(scope="module")
def copy(project_copy) -> Path:
    return project_copy


@pytest.fixture(scope="module")
def first_run(copy, make, edit_param) -> subprocess.CompletedProcess:
    # `auto` tries the Kaggle download with the planted credentials first (it fails: no network
    # here, or the fake key is rejected), then falls back to the phantom set.
    edit_param(copy, "smoke", "data", "data_source", "auto")
    # One guided epoch on the phantoms' masks: the run keeps its unguided model, and 04/05 pair
    # the two on the same images (the cpu profile's shape, at seconds scale).
    edit_param(copy, "smoke", "train", "lesion_guidance", "1.0")
    edit_param(copy, "smoke", "train", "guidance_epochs", "1")
    result = make(copy, "all", "PROFILE=smoke")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def test_make_all_smoke_produces_every_output(copy, first_run):
    assert first_run.stdout.splitlines()[0].startswith("profile: smoke")
    run = copy / "reports" / "smoke"
    for stage in STAGES:
        nb = nbformat.read(run / f"{stage}.ipynb", as_version=4)
        errors = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, f"{stage} has error outputs"
        html = (run / "html" / f"{stage}.html").read_text()
        assert "<html" in html and len(html) > 10_000
        # Self-contained: images are embedded, no script or stylesheet is fetched from the network.
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?://', html)
    figures = {p.stem for p in (run / "figures").glob("*.png")}
    assert {
        "eda_class_counts",
        "train_curves",
        "eval_confusion_headline",
        "cam_reference_view",
        "cam_randomization",
    } <= figures
    metrics = json.loads((run / "metrics.json").read_text())
    acc = metrics["evaluate"]["headline"]["summary"]["accuracy"]
    # grouped: a quarter of the 64 phantoms (whole copy groups, per class) held out for test
    manifest = data.read_manifest(run / "manifest.csv")
    headline = manifest[manifest["headline_test"]]
    assert 0.0 <= acc <= 1.0 and metrics["evaluate"]["headline"]["summary"]["n"] == len(headline)
    assert set(headline["subset"]) == {"test"} and 12 <= len(headline) <= 20
    assert set(headline["split"]) == {"Training", "Testing"}  # the folders pooled
    assert metrics["data"]["protocol"] == "grouped" and not any(metrics["data"]["leaks"].values())
    # the guided phase kept its unguided start, and 04 and 05 paired the two on the same images
    paired = metrics["evaluate"]["paired"]
    assert paired["names"] == ["unguided", "guided"] and paired["overall"]["n"] == len(headline)
    assert (run / "model_unguided.keras").is_file()
    pointing = metrics["gradcam"]["paired_localisation"]
    assert set(pointing) == {"val", "test"} and pointing["test"]["overall"]["n"] >= 3
    assert metrics["gradcam"]["localisation_test"]["overall"]["n_images"] >= 3
    assert metrics["data"]["source"] == "phantom" and metrics["train"]["epochs_run"] >= 1
    assert list(metrics["stage_runs"]) == list(STAGES)
    assert all(re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d", r["finished_utc"])
               for r in metrics["stage_runs"].values())  # fmt: skip
    assert metrics["gradcam"]["localisation"], "phantoms have masks: localisation must be scored"
    sanity = metrics["gradcam"]["randomization"]
    assert sanity["n_images"] == 16 and isinstance(sanity["passed"], bool)
    index = (run / "index.html").read_text()
    assert "smoke" in index and f"{acc:.4f}" in index
    for stage in STAGES:
        assert f'href="html/{stage}.html"' in index
    assert (run / "manifest.csv").is_file() and (run / "model.keras").is_file()
    assert 'href="model_card.html"' in index and (run / "model_card.md").is_file()
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["params"]["epochs"] == 2 and "tensorflow" in run_json["environment"]["packages"]


def test_every_figure_is_inline_in_its_report_and_no_startup_noise(copy, first_run):
    """The structural half of the report check (the browser half: test_reports_in_a_browser)."""
    run = copy / "reports" / "smoke"
    figures = sorted(p.stem for p in (run / "figures").glob("*.png"))
    for stage in PIPELINE:
        html = (run / "html" / f"{stage.name}.html").read_text()
        shown = embedded_images(html)
        expected = [f for f in figures if stage.figure_prefix and f.startswith(stage.figure_prefix)]
        # Every figure the stage saved is shown, once, as a PNG that decodes, named by its alt text.
        assert sorted(alt for alt, _ in shown) == expected, stage.name
        for alt, png in shown:
            assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None, alt
        notebook = (run / f"{stage.name}.ipynb").read_text()
        for text in (html, notebook):
            assert "absl::InitializeLog" not in text and "cuInit" not in text, stage.name
            assert "cudart_stub" not in text and "PosixPath(" not in text, stage.name
    assert len(figures) >= 12


def test_reports_in_a_browser(copy, first_run, make):
    """Every report page in headless Chromium, offline: images decode, no request, no error."""
    from brainmri.reports import browser

    try:
        browser.find_chromium()
    except browser.BrowserMissing as exc:
        pytest.skip(str(exc))
    result = make(copy, "screenshots", "PROFILE=smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    run = copy / "reports" / "smoke"
    assert "html/05_gradcam.html: " in result.stdout
    for name in ("index", "04_evaluate", "05_gradcam"):
        assert (run / "screenshots" / f"{name}.png").stat().st_size > 10_000


def test_planted_kaggle_key_never_appears_in_any_output(copy, first_run, planted_key):
    assert planted_key not in first_run.stdout + first_run.stderr
    nb = (copy / "reports" / "smoke" / "01_download.ipynb").read_text()
    assert "Kaggle download not possible" in nb and "phantom" in nb
    for path in [*(copy / "reports").rglob("*"), *(copy / "data").rglob("*")]:
        if path.is_file() and path.suffix not in (".jpg", ".png", ".keras", ".h5"):
            assert planted_key.encode() not in path.read_bytes(), f"key leaked into {path}"


def test_metrics_validate_and_compare(copy, first_run, make):
    from brainmri.evaluation import validate_metrics_block

    metrics = json.loads((copy / "reports" / "smoke" / "metrics.json").read_text())
    for split in ("headline", "unguided"):  # smoke: protocol grouped, a guided phase
        validate_metrics_block(metrics["evaluate"][split])
    assert "official" not in metrics["evaluate"]
    from brainmri.evaluation import validate_ood_record
    from brainmri.io import file_sha256

    ood = metrics["evaluate"]["ood"]
    validate_ood_record(ood)  # the guard: fitted on train, thresholded on validation, written
    ood_file = copy / "reports" / "smoke" / ood["guard"]["file"]["name"]
    assert file_sha256(ood_file) == ood["guard"]["file"]["sha256"]
    assert ood["guard"]["validation"]["kept"] >= 0.9 and ood["guard"]["kinds"]
    shutil.copytree(copy / "reports" / "smoke", copy / "reports" / "smoke-copy")
    result = make(copy, "compare", "A=smoke", "B=smoke-copy")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "smoke-copy" in lines[0]
    # Ten headline rows per split (accuracy, macro F1, kappa, MCC, 2 x ECE, 4 sensitivities),
    # identical runs: every difference is zero.
    rows = [line.split() for line in lines[1:]]
    assert sorted({r[0] for r in rows}) == ["headline", "unguided"] and len(rows) == 20
    assert all(r[-1] in ("+0.0000", "-") for r in rows)
    missing = make(copy, "compare", "A=smoke", "B=absent")
    assert missing.returncode != 0 and "make all PROFILE=absent" in missing.stdout + missing.stderr
    shutil.rmtree(copy / "reports" / "smoke-copy")


def test_ood_study_scores_each_layer_and_score_on_the_run(copy, first_run, load_script, tmp_path):
    """tools/ood_study.py on the smoke run: every layer and score, every probe kind, thresholds
    keeping 95% of validation; it reads no test image and writes nothing into the run."""
    study = load_script("tools/ood_study.py")
    run = copy / "reports" / "smoke"
    before = sorted(p.name for p in run.iterdir())
    out = tmp_path / "study.json"
    assert study.main(["--run", str(run), "--out", str(out), "--probe-slices", "4"]) == 0
    result = json.loads(out.read_text())
    assert len(result["methods"]) == len(study.LAYERS) * len(study.METHODS)
    for rec in result["methods"].values():
        assert rec["validation_kept"] >= min(0.95, 1 - rec["validation_refused_by_gate"]) - 1e-9
        assert rec["kinds"]["photograph"]["gate"] == 1.0
        assert set(rec["groups"]) == {"far", "near", "stress"}
    assert sorted(p.name for p in run.iterdir()) == before


def test_validation_compare_pairs_two_models_on_validation_only(
    copy, first_run, load_script, capsys, monkeypatch
):
    """tools/validation_compare.py on the smoke run's unguided start and guided model: the
    paired counts agree with the accuracies, only validation images are read, and a run with
    another split is refused."""
    import pandas as pd

    from brainmri import model as mdl

    compare = load_script("tools/validation_compare.py")
    read, predict_files = [], mdl.predict_files

    def spy(net, files, **kwargs):
        read.extend(files)
        return predict_files(net, files, **kwargs)

    monkeypatch.setattr(mdl, "predict_files", spy)
    args = ["--a", "smoke", "--a-root", str(copy), "--a-model", "unguided"]
    assert compare.main([*args, "--b", "smoke", "--b-root", str(copy)]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    run = copy / "reports" / "smoke"
    manifest = pd.read_csv(run / "manifest.csv", keep_default_na=False)
    root = Path(json.loads((run / "data.json").read_text())["root"])
    val = manifest[manifest["subset"] == "val"]
    assert sorted(set(read)) == sorted(str(root / p) for p in val["path"])  # no test image
    overall = record["overall"]
    n, test = overall["n"], overall["mcnemar"]
    assert n == len(val) == sum(part["n"] for part in record["per_class"].values())
    accuracy = overall["accuracy"]
    assert accuracy["a"] - accuracy["b"] == pytest.approx((test["b"] - test["c"]) / n)
    # the same model with test-time flips: a paired comparison of the one model with its TTA
    assert compare.main([*args, "--b", "smoke", "--b-root", str(copy), "--b-model", "unguided",
                         "--b-tta"]) == 0  # fmt: skip
    flipped = json.loads(capsys.readouterr().out.splitlines()[0])
    assert flipped["a"] + " tta" == flipped["b"] and flipped["overall"]["n"] == n

    other = copy / "reports" / "smoke-split"
    shutil.copytree(run, other)
    moved = manifest.copy()
    moved.loc[val.index[0], "subset"] = "train"  # one validation image less
    moved.to_csv(other / "manifest.csv", index=False)
    with pytest.raises(SystemExit, match="validation splits differ"):
        compare.main([*args, "--b", "smoke-split", "--b-root", str(copy)])
    shutil.rmtree(other)


def test_second_run_does_nothing(copy, first_run, make):
    run = copy / "reports" / "smoke"
    before = stage_mtimes(run)
    again = make(copy, "all", "PROFILE=smoke")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stdout and "running" not in again.stdout
    assert stage_mtimes(run) == before


def test_guidance_study_fine_tunes_the_run_under_each_variant(
    copy, first_run, load_script, tmp_path, capsys
):
    """tools/guidance_study.py on the smoke run: one line per epoch, the kept epoch, a table;
    the run's reports are left as they were."""
    study = load_script("tools/guidance_study.py")
    run = copy / "reports" / "smoke"
    before = {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file()}
    out = tmp_path / "study.jsonl"
    variants = [
        "lesion_guidance=1,guidance_epochs=1",
        "lesion_guidance=2,guidance_margin=0.1,guidance_epochs=2,guidance_distillation=0.5",
    ]
    argv = ["--root", str(copy), "--profile", "smoke", "--out", str(out), "--mix", "0.5"]
    assert study.main([*argv, *(a for v in variants for a in ("--variant", v))]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    first = {"lesion_guidance": 1, "guidance_epochs": 1}
    second = {
        "lesion_guidance": 2,
        "guidance_margin": 0.1,
        "guidance_epochs": 2,
        "guidance_distillation": 0.5,
    }
    kept_second = 1 + int(rows[4]["val_accuracy"] > rows[3]["val_accuracy"])
    assert [(r["variant"], r["epoch"]) for r in rows] == [
        ({}, 0),  # the run's own model, where every variant starts
        (first, 1),
        (first | {"mix": 0.5}, 1),  # halfway from the start to the kept epoch
        (second, 1),
        (second, 2),
        (second | {"mix": 0.5}, kept_second),
    ]
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    for r in rows:
        assert r["split"] == "val" and 0.0 <= r["val_accuracy"] <= 1.0
        for label in TUMOUR_CLASSES:
            s = r[label]
            assert s["n"] >= 1 and 0.0 <= s["pointing_rate_strict"] <= s["pointing_rate"] <= 1.0
    for r in rows[1:]:
        if "mix" not in r["variant"]:  # a trained epoch: the guided phase's penalty was logged
            assert 0.0 <= r["lesion_outside"] <= 1.0
    assert "centre prior" in printed
    # smoke is a guided run: every variant starts where its guided phase started
    assert f"start model: {run / 'model_unguided.keras'}" in printed
    assert ("chosen on validation:" in printed) != ("no variant's kept epoch" in printed)
    assert {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file()} == before


def test_gradcam_param_reruns_only_gradcam(copy, first_run, make, edit_param):
    run = copy / "reports" / "smoke"
    before = stage_mtimes(run)
    edit_param(copy, "smoke", "gradcam", "interpolant", "0.4")
    # UNTIL stops before the stage that is out of date: nothing runs, nothing changes
    partial = make(copy, "all", "PROFILE=smoke", "UNTIL=04_evaluate")
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "until 04_evaluate: 05_gradcam not run" in partial.stdout
    assert "running" not in partial.stdout and stage_mtimes(run) == before
    result = make(copy, "all", "PROFILE=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    ran = re.findall(r"\[(\d\d_\w+)\] running", result.stdout)
    assert ran == ["05_gradcam"]
    after = stage_mtimes(run)
    assert (
        all(after[s] == before[s] for s in STAGES[:-1])
        and after["05_gradcam"] > before["05_gradcam"]
    )


def test_failing_notebook_keeps_partial_and_earlier_outputs(copy, first_run, make, edit_param):
    run = copy / "reports" / "smoke"
    before = stage_mtimes(run)
    model_bytes = (run / "model.keras").read_bytes()
    edit_param(copy, "smoke", "gradcam", "cam_layer", "no_such_layer")
    result = make(copy, "all", "PROFILE=smoke")
    assert result.returncode != 0
    assert "stage 05_gradcam failed" in result.stderr and "no_such_layer" in result.stderr
    assert "reports/smoke/failed/05_gradcam.ipynb" in result.stderr
    assert (run / "failed" / "05_gradcam.ipynb").is_file()
    assert 'href="failed/05_gradcam.ipynb"' in (run / "index.html").read_text()
    assert not (run / ".state" / "05_gradcam.done.json").exists()
    assert {s: t for s, t in stage_mtimes(run).items() if s != "05_gradcam"} == {
        s: t for s, t in before.items() if s != "05_gradcam"
    }
    assert (run / "model.keras").read_bytes() == model_bytes
    # Still out of date: the next run tries stage 05 again (and only it).
    edit_param(copy, "smoke", "gradcam", "cam_layer", "null")
    result = make(copy, "all", "PROFILE=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.findall(r"\[(\d\d_\w+)\] running", result.stdout) == ["05_gradcam"]
    assert not (run / "failed" / "05_gradcam.ipynb").exists()


def test_bad_parameter_stops_before_any_work(copy, first_run, make, edit_param):
    run = copy / "reports" / "smoke"
    before = stage_mtimes(run)
    original = (copy / "params" / "smoke.yaml").read_text()
    edit_param(copy, "smoke", "train", "epochs", "-3")
    try:
        result = make(copy, "all", "PROFILE=smoke")
    finally:
        (copy / "params" / "smoke.yaml").write_text(original)
    assert result.returncode != 0
    assert "smoke.yaml" in result.stderr and "train.epochs" in result.stderr
    assert "an integer in [1, 1000]" in result.stderr and "running" not in result.stdout
    assert stage_mtimes(run) == before


def test_clean_removes_only_the_profile_reports(copy, first_run, make):
    (copy / "reports" / "other").mkdir(exist_ok=True)
    result = make(copy, "clean", "PROFILE=other")
    assert result.returncode == 0 and not (copy / "reports" / "other").exists()
    assert (copy / "reports" / "smoke").is_dir() and (copy / "data").is_dir()


def test_until_must_name_a_stage(tmp_path):
    from brainmri.config import ParamError
    from brainmri.pipeline import run_pipeline

    with pytest.raises(ParamError, match="until = '03_training': expected one of the stages 01"):
        run_pipeline("smoke", tmp_path, until="03_training")
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_help_is_the_default_goal(copy, make):
    result = make(copy)
    assert result.returncode == 0
    for target in ("all", "test", "lab", "html", "screenshots", "clean", "compare", "bench"):
        assert f"make {target}" in result.stdout


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"profile": "cpu"}, "cpu"),
        ({"data_dir": "DATA"}, "default"),
        ({}, "demo"),
    ],
)
def test_profile_choice(tmp_path, kwargs, expected):
    (tmp_path / "DATA" / "Training").mkdir(parents=True)
    if "data_dir" in kwargs:
        kwargs = {**kwargs, "data_dir": str(tmp_path / "DATA")}
    env = {"HOME": str(tmp_path / "home")}
    profile, reason = choose_profile(tmp_path, kwargs.get("profile"), kwargs.get("data_dir"), env)
    assert profile == expected and reason


def test_credentials_or_downloaded_data_choose_default(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert (
        choose_profile(tmp_path, None, None, {**env, "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"})[0]
        == "default"
    )
    (tmp_path / "data" / "brain-tumor-mri-dataset").mkdir(parents=True)
    assert choose_profile(tmp_path, None, None, env)[0] == "default"


def test_choose_prints_the_profile_and_how_to_pick_another(tmp_path, capsys, monkeypatch):
    from brainmri.cli import main

    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["--root", str(tmp_path), "choose"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(
        "profile: demo (no DATA_DIR, no downloaded dataset and no Kaggle credentials)"
    )
    assert "DATA_DIR=" in line


def test_notebook_hash_ignores_outputs_metadata_and_parameter_values(tmp_path, project_root):
    from brainmri.pipeline import notebook_hash

    source = project_root / "notebooks" / "05_gradcam.ipynb"
    nb = nbformat.read(source, as_version=4)
    original = notebook_hash(source)
    nb.metadata["widgets"] = {"saved": "by JupyterLab"}
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello")]
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace("interpolant = 0.5", "interpolant = 0.3")
    nbformat.write(nb, tmp_path / "saved.ipynb")
    assert notebook_hash(tmp_path / "saved.ipynb") == original
    nb.cells[-1].source += "\nprint('changed')"
    nbformat.write(nb, tmp_path / "edited.ipynb")
    assert notebook_hash(tmp_path / "edited.ipynb") != original
