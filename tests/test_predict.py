"""brainmri.predict: scans of every supported kind, skipped files with reasons, calibrated
probabilities, the out-of-distribution score, the written report, and the CLI."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from scipy.special import logsumexp

from brainmri import cli, config, data, ood, predict, runs
from brainmri import model as mdl
from brainmri.data import scans


def _dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", **extra) -> Path:
    """Write a single- or multi-frame grey DICOM file with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    frames = pixels if pixels.ndim == 3 else pixels[None]
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_luts_window_and_monochrome1(tmp_path):
    ramp = np.tile(np.arange(0, 4000, 62.5, dtype=np.uint16), (64, 1))  # 0..3937 across
    plain = scans.read_dicom(_dicom(tmp_path / "a.dcm", ramp))
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8
    assert plain[0, 0, 0] == 0 and plain[0, -1, 0] == 255  # min-max without a window
    windowed = scans.read_dicom(
        _dicom(tmp_path / "b.dcm", ramp, WindowCenter=1000, WindowWidth=400)
    )
    # outside the window [800, 1200] every value saturates; inside it the ramp is kept
    assert (windowed[0, :12, 0] == 0).all() and (windowed[0, 20:, 0] == 255).all()
    assert 0 < windowed[0, 16, 0] < 255
    inverted = scans.read_dicom(
        _dicom(tmp_path / "c.dcm", (ramp // 16).astype(np.uint8), photometric="MONOCHROME1")
    )
    assert inverted[0, 0, 0] == 255 and inverted[0, -1, 0] == 0  # high values are dark


def test_a_large_dicom_is_windowed_in_bands_as_a_whole(tmp_path):
    """The LUTs run a band of rows at a time (pydicom's return float64): the same pixels as
    windowing the whole slice at once, over more than one band."""
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ramp = (np.arange(1100 * 1100, dtype=np.uint32) % 4000).astype(np.uint16).reshape(1100, 1100)
    path = _dicom(
        tmp_path / "big.dcm", ramp, RescaleSlope=2, RescaleIntercept=-10,
        WindowCenter=3000, WindowWidth=4000, PhotometricInterpretation="MONOCHROME1",
    )  # fmt: skip
    ds = dcmread(path)
    whole = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    expected = np.round(255.0 - (whole - whole.min()) / (whole.max() - whole.min()) * 255.0)
    assert ramp.size > scans._BAND_PIXELS  # more than one band
    assert np.array_equal(scans.read_dicom(path)[..., 0], expected.astype(np.uint8))


def test_a_dicom_of_zero_frames_is_one_line_without_pydicom_warnings(tmp_path, capfd):
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    path = _dicom(tmp_path / "zero.dcm", ramp, NumberOfFrames=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(scans.ScanError) as refused:
            scans.read_scan(path, 16)
    assert str(refused.value) == "invalid DICOM header: NumberOfFrames 0; expected 1 (one slice)"
    assert caught == [] and capfd.readouterr().err == ""


def test_unusable_files_are_skipped_with_a_reason(tmp_path, tiny_model):
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    files = {
        "two_frames.dcm": _dicom(tmp_path / "two_frames.dcm", np.stack([ramp, ramp])),
        "notes.txt": tmp_path / "notes.txt",
        "broken.jpg": tmp_path / "broken.jpg",
        "slice.png": tmp_path / "slice.png",
    }
    files["notes.txt"].write_text("not an image")
    files["broken.jpg"].write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cv2.imwrite(str(files["slice.png"]), ramp)
    model = mdl.load_model(tiny_model)
    info = runs.run_info(tiny_model, None)
    table = predict.predict_scans(
        scans.find_scans(tmp_path), model, info, tmp_path / "out", echo=lambda _: None
    ).set_index("file")
    reasons = {Path(f).name: r for f, r in table["reason"].items()}
    assert reasons["two_frames.dcm"].startswith("multi-frame DICOM (2 frames)")
    assert reasons["notes.txt"].startswith("unsupported file type '.txt'")
    assert reasons["broken.jpg"].startswith("truncated or corrupt")
    assert table.loc[str(files["slice.png"]), "status"] == "ok"


def test_every_entry_found_is_listed_with_its_reason(tmp_path, tiny_model):
    """Links to folders (listed, not followed), broken links, FIFOs and folders named like
    images are no longer left out without a word; a FIFO is refused without being opened."""
    ramp = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    scans_dir, elsewhere = tmp_path / "scans", tmp_path / "elsewhere"
    for folder in (scans_dir / "x.jpg", elsewhere):
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "inside.png"), ramp)
    cv2.imwrite(str(scans_dir / "slice.png"), ramp)
    (scans_dir / "linked").symlink_to(elsewhere, target_is_directory=True)
    (scans_dir / "broken.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(scans_dir / "pipe.png")
    (scans_dir / ".hidden.png").write_bytes(b"skipped on purpose")
    found = scans.find_scans(scans_dir)
    assert [p.relative_to(scans_dir).as_posix() for p in found] == [
        "broken.png", "linked", "pipe.png", "slice.png", "x.jpg/inside.png"
    ]  # fmt: skip
    # a glob names a folder like x.jpg too: it is walked as if named
    assert scans.find_scans(scans_dir / "*.jpg") == [scans_dir / "x.jpg" / "inside.png"]
    assert scans.find_scans(scans_dir / "pipe.png") == [scans_dir / "pipe.png"]
    model = mdl.load_model(tiny_model)
    table = predict.predict_scans(
        found, model, runs.run_info(tiny_model, None), tmp_path / "out",
        overlays=False, echo=lambda _: None,
    ).set_index("file")  # fmt: skip
    reasons = {Path(f).relative_to(scans_dir).as_posix(): r for f, r in table["reason"].items()}
    assert reasons == {
        "broken.png": "broken symbolic link",
        "linked": "symbolic link to a folder, not followed (name the folder itself to include it)",
        "pipe.png": "a FIFO (named pipe), not a regular file",
        "slice.png": "",
        "x.jpg/inside.png": "",
    }
    # named itself, a link to a folder is followed
    assert scans.find_scans(scans_dir / "linked") == [scans_dir / "linked" / "inside.png"]
    with pytest.raises(scans.ScanError, match="a folder, not a file"):
        scans.read_scan(scans_dir / "x.jpg", 16)


def test_a_folder_is_predicted_like_the_pipeline_and_reported_offline(
    tmp_path, tiny_model, phantom_set
):
    folder = phantom_set / "Testing" / "glioma"
    model = mdl.load_model(tiny_model)
    info = runs.RunInfo(tiny_model, "0" * 64, temperature=2.0, ood_threshold=0.0)
    out = tmp_path / "run"
    table = predict.predict_scans(scans.find_scans(folder), model, info, out, echo=lambda _: None)
    files = sorted(str(p) for p in folder.glob("*.jpg"))
    assert table["file"].tolist() == files and (table["status"] == "ok").all()
    # The same decoding and model as 04_evaluate: the same logits, so the same classes.
    logits, _ = mdl.predict_files(model, files)
    classes = [config.CLASS_NAMES[k] for k in logits.argmax(axis=1)]
    assert table["predicted"].tolist() == classes
    calibrated = table[[f"p_{c}_calibrated" for c in config.CLASS_NAMES]].to_numpy()
    expected = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=1, keepdims=True)
    assert np.allclose(calibrated, expected, atol=1e-5)
    assert np.allclose(table["ood_score"], logsumexp(logits, axis=1), atol=1e-4)
    assert (table["ood_flag"] == (table["ood_score"] < 0.0)).all()  # no gate, no ood.npz
    assert set(table["ood_layer"][table["ood_flag"]]) <= {"energy"}
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["temperature"] == 2.0 and len(saved["predictions"]) == len(files)
    views = sorted((out / "views").glob("*.png"))
    assert len(views) == len(files)
    assert cv2.imread(str(views[0])).shape == (32, 64, 3)  # the scan beside its overlay
    page = (out / "index.html").read_text()
    assert page.count("<img ") == len(files) and "not a medical device" in page
    assert all(f'src="views/{v.name}"' in page for v in views)  # linked, not embedded
    assert "data:image" not in page
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert sorted(p.name for p in out.iterdir()) == [
        "index.html", "predictions.csv", "predictions.json", "views"
    ]  # fmt: skip
    with pytest.raises(FileExistsError, match="never overwrite"):
        predict.predict_scans(files, model, info, out)


def test_the_ood_threshold_keeps_the_validation_share():
    logits = np.random.default_rng(0).normal(0, 3, (1000, 4))
    threshold = ood.ood_threshold(logits, keep=0.95)
    assert (ood.energy_score(logits) >= threshold).mean() == pytest.approx(0.95, abs=0.002)


def test_after_the_gate_the_energy_threshold_keeps_the_share_together_with_it():
    # the gate refuses 3% of validation: gate + energy must still keep 95% of all images, as
    # predict's fallback flags them (refused, or energy below the threshold)
    logits = np.random.default_rng(1).normal(0, 3, (1000, 4))
    passed = np.ones(1000, bool)
    passed[::33] = False
    threshold = ood.ood_threshold(logits, keep=0.95, passed=passed)
    kept = passed & (ood.energy_score(logits) >= threshold)
    assert kept.mean() == pytest.approx(0.95, abs=0.002)
    alone = ood.ood_threshold(logits, keep=0.95)
    assert (passed & (ood.energy_score(logits) >= alone)).mean() < 0.93  # what it was


def test_a_model_carrying_code_is_refused(tmp_path):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="(?i)lambda"):
        mdl.load_model(path)


def test_the_cli_predicts_a_glob_and_warns_of_a_foreign_model(tmp_path, tiny_model, capsys):
    root = tmp_path / "repo"
    run = root / "reports" / "smoke"
    run.mkdir(parents=True)
    (root / "params").mkdir()
    (root / "params" / "default.yaml").touch()  # a project: the CLI writes nowhere else
    (run / "model.keras").write_bytes(tiny_model.read_bytes())
    (run / "run.json").write_text(json.dumps({"model_sha256": "f" * 64}))
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"scan{i}.png"), np.full((40, 40), 60 * i, np.uint8))
    out = tmp_path / "predicted"
    argv = ["--root", str(root), "predict", str(tmp_path / "scan*.png"), "--profile", "smoke"]
    assert cli.main([*argv, "--out", str(out), "--no-overlays"]) == 0
    captured = capsys.readouterr()
    assert "differs from the ffffffffffff" in captured.err
    assert "skipped: 0" in captured.out and (out / "predictions.csv").is_file()
    assert cli.main([*argv, "--out", str(out)]) == 1  # never over an earlier run
    assert cli.main(["--root", str(root), "predict", str(tmp_path / "none*.png")]) == 1


def test_the_exported_savedmodel_serves_uint8_images_like_the_keras_model(tmp_path, tiny_model):
    """Scans at the input size, uncropped: 'serve' passes them through as 'serve_prepared'."""
    import tensorflow as tf

    model = mdl.load_model(tiny_model)
    target = predict.export_savedmodel(model, tmp_path / "savedmodel")
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    loaded = tf.saved_model.load(str(target))  # kept: its variables live as long as it does
    served = loaded.serve(tf.constant(images))["probabilities"]
    expected = model(images.astype(np.float32), training=False)
    assert np.allclose(served.numpy(), keras.ops.convert_to_numpy(expected), atol=1e-6)
    with pytest.raises(FileExistsError):
        predict.export_savedmodel(model, target)


def test_the_cli_export_crops_as_the_run_trained(tmp_path, tiny_model, capsys):
    run = tmp_path / "repo" / "reports" / "smoke"
    run.mkdir(parents=True)
    (tmp_path / "repo" / "params").mkdir()
    (tmp_path / "repo" / "params" / "default.yaml").touch()  # a project
    (run / "model.keras").write_bytes(tiny_model.read_bytes())
    (run / "run.json").write_text(json.dumps({"params": {"crop_to_brain": True}}))
    argv = ["--root", str(tmp_path / "repo"), "export", "--profile", "smoke", "--out"]
    assert cli.main([*argv, str(tmp_path / "cropped")]) == 0
    assert "cut to the head square" in capsys.readouterr().out  # the SavedModel cuts itself
    (run / "run.json").write_text(json.dumps({"params": {"crop_to_brain": False}}))
    assert cli.main([*argv, str(tmp_path / "plain")]) == 0
    assert "head" not in capsys.readouterr().out
    import tensorflow as tf

    scan = np.zeros((1, 60, 90, 3), np.uint8)
    scan[0, 20:40, 30:50] = 150
    loaded = [tf.saved_model.load(str(tmp_path / name)) for name in ("cropped", "plain")]
    boxes = [model.serve(tf.constant(scan))["boxes"].numpy()[0] for model in loaded]
    assert tuple(boxes[0]) == data.brain_box(scan[0]) and tuple(boxes[1]) == (0, -15, 90)


def test_the_energy_record_keeps_the_validation_share_and_scores_every_group():
    val_logits = np.random.default_rng(2).normal(0, 3, (20, 4))
    record = ood.energy_record(val_logits, {"other": val_logits[:5]})
    assert list(record["flagged"]) == ["validation", "other"] and record["score"] == "energy"
    assert record["threshold"] == ood.ood_threshold(val_logits, keep=0.95)
    assert record["flagged"]["validation"] == pytest.approx(0.05)


def test_scans_are_cropped_as_the_run_trained(tmp_path, tiny_model):
    """The run's model.crop_to_brain decides, unless the caller says; without a run: off."""
    scan = np.zeros((80, 80), np.uint8)
    scan[20:60, 10:50] = 120
    cv2.imwrite(str(tmp_path / "scan.png"), scan)
    plain, cropped = (scans.read_scan(tmp_path / "scan.png", 32, crop=c) for c in (False, True))
    # the pipeline's decoding (data.load_image) and the scans' cut the same square
    assert np.array_equal(cropped, data.load_image(tmp_path / "scan.png", 32, crop=True))
    assert cropped.mean() > plain.mean()  # the head fills the frame
    run = tmp_path / "run"
    run.mkdir()
    assert runs.run_info(tiny_model, None).crop_to_brain is False
    unknown = runs.run_info(tiny_model, run)  # a run folder without its record: said so
    assert unknown.crop_to_brain is False and "no training record" in unknown.warnings[0]
    (run / "run.json").write_text(json.dumps({"params": {"crop_to_brain": True}}))
    assert runs.run_info(tiny_model, run).crop_to_brain is True
    assert runs.run_info(tiny_model, run, crop_to_brain=False).crop_to_brain is False
    model = mdl.load_model(tiny_model)
    info = runs.run_info(tiny_model, run)
    table = predict.predict_scans(
        [tmp_path / "scan.png"], model, info, tmp_path / "out", overlays=False, echo=lambda _: None
    )
    # the probabilities of the cropped scan, which differ from the uncropped one's
    _, probs = mdl.predict_files(model, [tmp_path / "scan.png"], crop=True)
    _, uncropped = mdl.predict_files(model, [tmp_path / "scan.png"])
    got = table[[f"p_{c}" for c in config.CLASS_NAMES]].to_numpy(dtype=float)
    assert np.allclose(got, probs, atol=1e-5) and not np.allclose(got, uncropped, atol=1e-3)
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["crop_to_brain"]


def test_each_flag_names_its_layer_and_reason(tmp_path, tiny_model, phantom_set):
    """With the run's gate and ood.npz: a photograph and a blank image are refused by the gate
    with their reasons, a training phantom passes it; every row says which layer flagged it,
    and the page and predictions.json say what the flag can and cannot catch."""
    from brainmri.ood import features, gate, probes, report

    model = mdl.load_model(tiny_model)
    train = sorted((phantom_set / "Training").glob("*/*.jpg"))
    labels = np.array([config.CLASS_NAMES.index(p.parent.name) for p in train])
    bounds = report.fit_gate_on(train, quantile=0.0)
    train_x, _ = features.extract_files(model, train)
    scorer = features.fit_mahalanobis(train_x, labels)
    threshold = float(np.quantile(scorer.score(train_x), 0.95))
    guard = features.FeatureGuard(scorer, threshold, 0.95, "0" * 64)
    cv2.imwrite(
        str(tmp_path / "photo.png"), cv2.cvtColor(probes.photographs()[0], cv2.COLOR_RGB2BGR)
    )
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((64, 64), np.uint8))
    files = [train[0], tmp_path / "photo.png", tmp_path / "blank.png"]
    info = runs.RunInfo(tiny_model, "0" * 64, ood_threshold=1e9, gate=bounds, guard=guard)
    out = tmp_path / "run"
    table = predict.predict_scans(files, model, info, out, echo=lambda _: None, overlays=False)
    by_name = table.set_index(table["file"].map(lambda f: Path(f).name))
    assert by_name.loc["photo.png", ["ood_flag", "ood_layer", "ood_reason"]].tolist() == [
        True, "gate", gate.REASONS["colour"]
    ]  # fmt: skip
    assert by_name.loc["blank.png", "ood_reason"] == gate.REASONS["contrast"]
    scan = by_name.loc[train[0].name]
    # past the gate, the feature distance decides (never the energy score, threshold 1e9)
    assert scan["ood_distance"] == pytest.approx(scorer.score(train_x[:1])[0], rel=1e-4)
    assert scan["ood_layer"] == ("features" if scan["ood_distance"] > threshold else "")
    written = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert {"ood_flag", "ood_layer", "ood_reason", "ood_distance", "ood_score"} <= set(written)
    page = (out / "index.html").read_text()
    assert predict.OOD_NOTE in page and f"gate: {gate.REASONS['colour']}" in page
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["ood_note"] == predict.OOD_NOTE and "input gate" in saved["ood_guard"]


def test_a_missing_or_stale_ood_file_is_one_line_and_predict_keeps_the_gate(tmp_path, tiny_model):
    from brainmri.ood import features, gate

    run = tmp_path / "run"
    run.mkdir()
    bounds = gate.fit_gate([gate.measure(np.full((8, 8, 3), v, np.uint8)) for v in (50, 90)])
    metrics = {"evaluate": {"ood": {"threshold": 1.5, "guard": {"gate": bounds.to_json()}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "run.json").write_text("{}")
    info = runs.run_info(tiny_model, run)
    lines = [w for w in info.warnings if "ood.npz" in w]
    assert len(lines) == 1 and "no feature statistics" in lines[0] and "\n" not in lines[0]
    assert lines[0].endswith(
        "out-of-distribution flags use the input gate and the energy score only"
    )
    assert info.guard is None and info.gate == bounds and info.ood_threshold == 1.5
    x = np.random.default_rng(0).normal(size=(20, 4))
    stale = features.FeatureGuard(features.fit_knn(x, k=2), 1.0, 0.95, "f" * 64)
    features.save_guard(run / "ood.npz", stale)
    lines = [w for w in runs.run_info(tiny_model, run).warnings if "ood.npz" in w]
    assert len(lines) == 1 and "stale" in lines[0]
    fresh = features.FeatureGuard(stale.scorer, 1.0, 0.95, runs.file_sha256(tiny_model))
    features.save_guard(run / "ood.npz", fresh)
    info = runs.run_info(tiny_model, run)
    assert info.guard is not None and not [w for w in info.warnings if "ood.npz" in w]


def test_uploaded_names_are_shown_without_paths_or_control_characters():
    from brainmri.predict import clean_name

    assert clean_name("C:\\scans\\a.png") == "a.png"
    assert clean_name("../../etc/x\r\n.dcm") == "x.dcm"
    assert clean_name("") == "(unnamed)"
