"""The fault suite of `brainmri predict` and `brainmri export` (issue 34, second pass): formula
cells, concurrent runs, read-only and impossible output paths, a full disk, Ctrl-C, progress and
the console.

Each case asserts its one-line outcome and that nothing outside the command's own output folder
changed.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainmri import cli, predict, runs
from brainmri import model as mdl
from brainmri.data import scans


@pytest.fixture
def project(tmp_path, tiny_model) -> Path:
    """A project root with reports/smoke/model.keras (and its run record)."""
    run = tmp_path / "repo" / "reports" / "smoke"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(tiny_model.read_bytes())
    (run / "run.json").write_text(json.dumps({"params": {"crop_to_brain": False}}))
    (tmp_path / "repo" / "params").mkdir()
    (tmp_path / "repo" / "params" / "default.yaml").touch()  # a project: the CLI checks
    return tmp_path / "repo"


def _scans(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        image = np.random.default_rng(i).integers(0, 255, (40, 40), dtype=np.uint8)
        cv2.imwrite(str(folder / name), image)
    return folder


def _tree(root: Path) -> dict[str, int]:
    """Every file under root with its size (what "nothing else changed" compares)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def _predict(project: Path, images: Path | str, *extra: str) -> int:
    return cli.main(["--root", str(project), "predict", str(images), "--profile", "smoke", *extra])


# --- 9. formula injection ------------------------------------------------------------------------

FORMULA_NAMES = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM(A1).png", "\tt.png", "\rr.png"]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path, tiny_model, monkeypatch):
    _scans(tmp_path / "in", [*FORMULA_NAMES, "plain.png"])
    (tmp_path / "in" / "=cmd.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path / "in")  # relative names: the file cell starts with the name
    files = [Path(name) for name in [*FORMULA_NAMES, "plain.png", "=cmd.txt"]]
    info = runs.run_info(tiny_model, None)
    out = tmp_path / "out"
    before = _tree(tmp_path / "in")
    table = predict.predict_scans(
        files, mdl.load_model(tiny_model), info, out, overlays=False, progress=False,
        echo=lambda _: None,
    )  # fmt: skip
    with open(out / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    cells = [row["file"] for row in rows]
    assert cells == ["'" + name for name in FORMULA_NAMES] + ["plain.png", "'=cmd.txt"]
    assert rows[-1]["status"] == "skipped" and rows[-1]["reason"].startswith("unsupported")
    # numbers stay numbers (a negative score is a value, not a formula); the JSON keeps names
    assert all(float(row["ood_score"]) == pytest.approx(s) for row, s in zip(
        rows[:-1], table["ood_score"][:-1], strict=True
    ))  # fmt: skip
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["predictions"][0]["file"] == "=HYPERLINK(1).png"
    assert _tree(tmp_path / "in") == before


# --- 10. concurrent runs -------------------------------------------------------------------------


def test_default_folders_are_unique_even_in_the_same_second(project, tmp_path, monkeypatch):
    images = _scans(tmp_path / "in", ["a.png", "b.png"])
    names = iter(["aaaaaa", "aaaaaa", "bbbbbb"])  # the second run's first name collides
    monkeypatch.setattr(predict.outputs.secrets, "token_hex", lambda _: next(names))

    class SameSecond(predict.outputs.datetime):
        @classmethod
        def now(cls, tz=None):
            return predict.outputs.datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(predict.outputs, "datetime", SameSecond)
    assert _predict(project, images, "--no-overlays") == 0
    assert _predict(project, images, "--no-overlays") == 0
    folders = sorted((project / "predictions").iterdir())
    assert [f.name for f in folders] == [
        "smoke-20260102-030405-aaaaaa",
        "smoke-20260102-030405-bbbbbb",
    ]
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == [
            "index.html", "predictions.csv", "predictions.json"
        ]  # fmt: skip


def test_a_folder_in_use_by_another_run_is_refused_naming_it(project, tmp_path, capsys):
    images = _scans(tmp_path / "in", ["a.png"])
    out = tmp_path / "shared"
    out.mkdir()
    (out / predict.INCOMPLETE).write_text("running\n")
    with open(out / predict.LOCK, "a+") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        before = _tree(out)
        assert _predict(project, images, "--out", str(out)) == 1
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {out}: in use by another predict run (process 4242); wait for it or choose "
        "another --out"
    ]
    assert _tree(out) == before


def test_a_finished_run_or_a_foreign_folder_is_never_overwritten(project, tmp_path, capsys):
    images = _scans(tmp_path / "in", ["a.png"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert _predict(project, images, "--out", str(foreign)) == 1
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {foreign}: exists and is not an empty folder; predictions never overwrite a "
        "finished run or other files: choose a new --out"
    ]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # no lock file added
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _predict(project, images, "--out", str(empty), "--no-overlays") == 0
    assert not (empty / predict.INCOMPLETE).exists() and not (empty / predict.LOCK).exists()


# --- 11. read-only, under a file, TensorFlow's errors --------------------------------------------


def test_predict_and_export_into_a_read_only_file_system_end_in_one_line(
    project, tmp_path, small_disk, capsys
):
    images = _scans(tmp_path / "in", ["a.png"])
    read_only = small_disk("64k", read_only=True)
    assert _predict(project, images, "--out", str(read_only / "out")) == 1
    ro = "read-only file system (EROFS); the file system is read-only"
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {read_only / 'out'}: {ro}: work in a writable copy, or remount it read-write"
    ]
    export = ["--root", str(project), "export", "--profile", "smoke", "--out"]
    assert cli.main([*export, str(read_only / "saved")]) == 1
    captured = capsys.readouterr()
    assert len(_error_lines(captured.err)) == 1
    assert _error_lines(captured.err)[0].startswith(f"error: {read_only / 'saved'}: {ro}")
    assert "Traceback" not in captured.err and not list(read_only.iterdir())


def test_an_out_path_under_a_file_ends_in_one_line(project, tmp_path, capsys):
    images = _scans(tmp_path / "in", ["a.png"])
    a_file = tmp_path / "report.txt"
    a_file.write_text("a file, not a folder")
    before = _tree(tmp_path)
    assert _predict(project, images, "--out", str(a_file / "out")) == 1
    # the file in the way is named: that is what to move or rename
    expected = "not a directory (ENOTDIR); a part of that path is a file, not a folder"
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {a_file}: {expected}: choose another path"
    ]
    export = ["--root", str(project), "export", "--profile", "smoke", "--out"]
    assert cli.main([*export, str(a_file / "saved")]) == 1
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {a_file}: {expected}: choose another path"
    ]
    assert _tree(tmp_path) == before


def test_an_export_on_a_full_disk_ends_in_one_line_and_leaves_nothing(project, small_disk, capsys):
    disk = small_disk("64k")  # smaller than the SavedModel: TensorFlow's own write fails
    export = ["--root", str(project), "export", "--profile", "smoke", "--out"]
    assert cli.main([*export, str(disk / "saved")]) == 1
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {disk / 'saved'}: ")
    assert "no space left on device" in lines[0]
    assert "Traceback" not in captured.err
    assert list(disk.iterdir()) == []  # no half SavedModel under any name


# --- 14. long runs: progress, incremental rows, a light page, Ctrl-C ----------------------------


def test_progress_is_shown_and_the_page_links_small_views(project, tmp_path, capsys):
    images = _scans(tmp_path / "in", [f"s{i:02d}.png" for i in range(40)])
    out = tmp_path / "out"
    assert _predict(project, images, "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "predicting + Grad-CAM" in err and "40/40" in err  # tqdm's bar
    page = (out / "index.html").read_text()
    assert "data:image" not in page and page.count('loading="lazy"') == 40
    assert len(page) < 40 * 1500  # a line per file, not the images
    assert len(list((out / "views").glob("*.png"))) == 40


def test_ctrl_c_keeps_the_finished_rows_and_the_folder_can_be_reused(
    tmp_path, tiny_model, project, monkeypatch, capsys
):
    images = _scans(tmp_path / "in", [f"s{i}.png" for i in range(7)])
    files = scans.find_scans(images)
    real_read = predict.batches.read_pixels
    calls = {"n": 0}

    def interrupt_on_the_fifth(path, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_read(path, **kwargs)

    monkeypatch.setattr(predict.batches, "read_pixels", interrupt_on_the_fifth)
    out = tmp_path / "out"
    info = runs.run_info(tiny_model, None)
    with pytest.raises(predict.Interrupted) as raised:
        predict.predict_scans(
            files, mdl.load_model(tiny_model), info, out, batch_size=2, progress=False
        )
    assert str(raised.value) == (
        f"interrupted (Ctrl-C) after 4 of 7 files: their rows are in {out / 'predictions.csv'}; "
        f"the same --out {out} may be used again (its partial results are then replaced)"
    )
    with open(out / "predictions.csv", newline="") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == [str(f) for f in files[:4]]
    assert json.loads((out / "predictions.json").read_text())["complete"] is False
    assert "Interrupted" in (out / "index.html").read_text()
    assert (out / predict.INCOMPLETE).is_file()
    # the CLI says it in one line; then a rerun into the same folder goes ahead
    calls["n"] = 0
    assert _predict(project, images, "--out", str(out)) == 130
    assert _error_lines(capsys.readouterr().err) == [
        f"error: interrupted (Ctrl-C) after 0 of 7 files: their rows are in "
        f"{out / 'predictions.csv'}; the same --out {out} may be used again (its partial "
        "results are then replaced)"
    ]
    monkeypatch.setattr(predict.batches, "read_pixels", real_read)
    assert _predict(project, images, "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "index.html", "predictions.csv", "predictions.json", "views"
    ]  # fmt: skip
    with open(out / "predictions.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 7
    assert len(list((out / "views").glob("*.png"))) == 7


# --- 15. the console -----------------------------------------------------------------------------


def test_every_batch_runs_one_traced_function(tiny_model, tmp_path):
    from brainmri.explain._plumbing import cam_functions

    model = mdl.load_model(tiny_model)
    files = scans.find_scans(_scans(tmp_path / "in", [f"s{i}.png" for i in range(5)]))
    info = runs.run_info(tiny_model, None)
    traced = []
    real = predict.batches._Model

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            traced.append(self)

    predict.batches._Model = Spy
    try:
        predict.predict_scans(
            files, model, info, tmp_path / "out", batch_size=2, progress=False,
            echo=lambda _: None,
        )  # fmt: skip
    finally:
        predict.batches._Model = real
    assert traced[0].forward.experimental_get_tracing_count() == 1  # batches 2, 2 and 1
    assert cam_functions(model, None).gradients.experimental_get_tracing_count() == 1


def test_the_console_shows_no_cuinit_line_and_no_retracing(project, tmp_path):
    images = _scans(tmp_path / "in", [f"s{i:02d}.png" for i in range(70)])
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run(
        [sys.executable, "-m", "brainmri.cli", "--root", str(project), "predict", str(images),
         "--profile", "smoke", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cuInit" not in done.stderr and "retracing" not in done.stderr, done.stderr[-2000:]
    assert "WARNING:tensorflow" not in done.stderr
