"""brainmri.explore.session: which run opens, the table of predictions and its cache, filters,
the confusion matrix, selecting, explaining and uploading, on a finished small phantom run."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainmri import explain, predict, runs
from brainmri import model as mdl
from brainmri.config import CLASS_NAMES
from brainmri.data.scans import ScanError
from brainmri.explore import Explorer, finished_runs, latest_run
from brainmri.explore.session import png
from brainmri.explore.table import CACHE_PREFIX
from brainmri.io import write_json


@pytest.fixture(scope="module")
def explorer(phantom_run) -> Explorer:
    root, profile = phantom_run
    return Explorer.open(profile, root=root)


# --- which run -------------------------------------------------------------------------------


def _fake_run(root: Path, name: str, *, evaluated: bool = True, age: float = 0.0) -> None:
    folder = root / "reports" / name
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"not read here")
    write_json(folder / "metrics.json", {"evaluate": {}} if evaluated else {"train": {}})
    stamp = 1_700_000_000 + age
    os.utime(folder / "metrics.json", (stamp, stamp))


def test_the_latest_finished_run_opens_by_default(tmp_path):
    _fake_run(tmp_path, "demo", age=10)
    _fake_run(tmp_path, "cpu", age=20)
    _fake_run(tmp_path, "smoke", evaluated=False, age=30)  # 04_evaluate has not run
    (tmp_path / "reports" / "bench").mkdir()  # make bench's folder: no model
    assert finished_runs(tmp_path) == ["cpu", "demo"]
    assert latest_run(tmp_path) == "cpu"


def test_no_finished_run_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no finished run.*make all PROFILE=demo"):
        latest_run(tmp_path)


def test_without_a_profile_the_latest_run_opens(phantom_run):
    root, profile = phantom_run
    opened = Explorer.open(root=root)  # the notebook's PROFILE = None
    assert opened.run.paths.profile == profile and opened.run.paths.root == root
    with pytest.raises(FileNotFoundError, match=r"reports/smoke/data.json: no data record"):
        Explorer.open("smoke", root=root)  # a profile that never ran


# --- the table -------------------------------------------------------------------------------


def test_the_table_holds_every_validation_and_test_image_scored_as_predict_scores(explorer):
    t = explorer.table
    manifest = explorer.run.manifest
    assert len(t) == int(manifest["subset"].isin(["val", "test"]).sum()) == 40
    assert set(t["subset"]) == {"val", "test"}
    calibrated = t[[f"p_{c}_calibrated" for c in CLASS_NAMES]].to_numpy()
    raw = t[[f"p_{c}" for c in CLASS_NAMES]].to_numpy()
    np.testing.assert_allclose(calibrated.sum(1), 1, atol=1e-9)
    assert (t["predicted"] == [CLASS_NAMES[i] for i in raw.argmax(1)]).all()
    np.testing.assert_allclose(t["confidence"], calibrated.max(1))
    # a temperature of 1.5 > 1 softens: the calibrated confidence is below the raw one
    assert (t["confidence"] <= raw.max(1) + 1e-12).all()
    assert (t["correct"] == (t["label"] == t["predicted"])).all()
    assert (t["ood_flag"] == (t["ood_score"] < explorer.info.ood_threshold)).all()
    assert t.loc[t["subset"] == "val", "ood_flag"].sum() == 1  # 5% of 20, as 04 chose it
    # every phantom tumour has a mask, no notumor image has one
    assert ((t["mask"] != "") == (t["label"] != "notumor")).all()


def test_the_logits_are_cached_under_the_model_hash_and_read_back(phantom_run, monkeypatch):
    root, profile = phantom_run
    first = Explorer.open(profile, root=root)
    cached = first.run.paths.cache_dir / f"{CACHE_PREFIX}{first.info.model_sha256[:16]}.csv"
    assert cached.is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("predicted again instead of reading the cache")

    monkeypatch.setattr(mdl, "predict_files", refuse)
    again = Explorer.open(profile, root=root)
    np.testing.assert_allclose(again.table["ood_score"], first.table["ood_score"])
    assert (again.table["predicted"] == first.table["predicted"]).all()
    # a damaged cache is predicted again and replaced, never trusted
    monkeypatch.undo()
    cached.write_text("path,logit_glioma\nnonsense,1\n")
    third = Explorer.open(profile, root=root)
    np.testing.assert_allclose(third.table["ood_score"], first.table["ood_score"], rtol=1e-5)
    assert "logit_pituitary" in cached.read_text()


# --- browsing --------------------------------------------------------------------------------


def test_filters_combine_and_sort_by_confidence(explorer):
    t = explorer.table
    test = explorer.filter(subset="test")
    assert len(test) == 20 and (test["subset"] == "test").all()
    assert test["confidence"].is_monotonic_increasing
    assert explorer.filter(subset="test", descending=True)["confidence"].is_monotonic_decreasing
    assert len(explorer.filter(subset="headline")) == 20  # all of the test subset here
    assert len(explorer.filter(subset="all")) == len(t)
    wrong = explorer.filter(subset="all", correct=False)
    assert len(wrong) == int((~t["correct"]).sum()) and not wrong["correct"].any()
    rows = explorer.filter(subset="val", true="glioma", predicted="glioma", confidence=(0.5, 0.9))
    assert (rows["label"] == "glioma").all() and (rows["predicted"] == "glioma").all()
    assert rows["confidence"].between(0.5, 0.9).all()
    expected = t[(t["subset"] == "val") & (t["label"] == "glioma") & (t["predicted"] == "glioma")]
    assert len(rows) == int(expected["confidence"].between(0.5, 0.9).sum())
    flagged = explorer.filter(subset="all", ood=True)
    assert len(flagged) == int(t["ood_flag"].sum()) > 0
    with pytest.raises(ValueError, match=r"subset='train'"):
        explorer.filter(subset="train")
    with pytest.raises(ValueError, match=r"label='tumour': expected one of"):
        explorer.filter(true="tumour")


def test_the_confusion_matrix_counts_what_the_filters_list(explorer):
    matrix = explorer.confusion(subset="test")
    assert list(matrix.index) == list(matrix.columns) == list(CLASS_NAMES)
    assert int(matrix.to_numpy().sum()) == 20
    for true in CLASS_NAMES:
        for predicted in CLASS_NAMES:
            listed = explorer.filter(subset="test", true=true, predicted=predicted)
            assert len(listed) == matrix.loc[true, predicted]


# --- one image -------------------------------------------------------------------------------


def test_select_shows_the_image_prepared_as_for_the_model_with_its_mask(explorer):
    index = explorer.filter(subset="test", true="meningioma").index[0]
    s = explorer.select(int(index))
    row = explorer.table.loc[index]
    assert s.key == row["path"] and s.label == "meningioma" and s.subset == "test"
    assert s.image.shape == (explorer.size, explorer.size, 3) and s.image.dtype == np.float32
    np.testing.assert_array_equal(s.image, explorer.run.images([row["path"]])[0])
    assert s.mask is not None and s.mask.shape == (explorer.size, explorer.size) and s.mask.any()
    assert list(s.probabilities.index) == list(CLASS_NAMES)
    np.testing.assert_allclose(
        s.probabilities["calibrated"], [row[f"p_{c}_calibrated"] for c in CLASS_NAMES]
    )
    assert explorer.select(row["path"]).key == s.key  # by path as well
    assert (s.view != np.round(s.image).astype(np.uint8)).any()  # the mask is outlined
    notumor = explorer.select(int(explorer.filter(subset="test", true="notumor").index[0]))
    assert notumor.mask is None
    with pytest.raises(KeyError, match="not among"):
        explorer.select("Testing/glioma/none.jpg")


def test_explain_follows_method_class_layer_and_strength(explorer):
    s = explorer.select(int(explorer.filter(subset="test", true="glioma").index[0]))
    grad = explorer.explain(s)
    assert grad.method == "gradcam" and grad.target == s.scores["predicted"]
    assert grad.layer == explain.find_target_layer(explorer.run.model)
    np.testing.assert_allclose(
        grad.cam,
        explain.gradcam(explorer.run.model, s.image[None], layer_name=grad.layer)[0],
        atol=1e-6,
    )
    loc = grad.localisation
    assert set(loc) == {
        "pointing",
        "pointing_tolerant",
        "tolerance_px",
        "energy_inside",
        "energy_ratio",
    }
    assert loc["pointing_tolerant"] >= loc["pointing"] and 0 <= loc["energy_inside"] <= 1
    assert loc["pointing"] == explain.pointing_game(grad.cam, s.mask)
    assert loc["tolerance_px"] == pytest.approx(0.067 * 64)  # the demo profile's tolerance

    plus = explorer.explain(s, method="gradcampp")
    score = explorer.explain(s, method="scorecam")
    assert score.label == "scorecam (top 32 channels)"
    assert not np.allclose(plus.cam, grad.cam) and not np.allclose(score.cam, grad.cam)
    other = next(c for c in CLASS_NAMES if c != grad.target)
    assert not np.allclose(explorer.explain(s, target=other).cam, grad.cam)
    finer = explorer.layers()[1]
    assert not np.allclose(explorer.explain(s, layer=finer).cam, grad.cam)

    again = explorer.explain(s, strength=0.9)  # the map is kept: only the blend is redone
    assert again.seconds == 0.0 and np.array_equal(again.cam, grad.cam)
    assert not np.array_equal(again.overlay, grad.overlay)
    assert png(again.overlay) != png(grad.overlay)
    for bad, match in (
        ({"method": "random"}, "method='random'"),
        ({"target": "tumour"}, "target='tumour'"),
        ({"layer": "no_such_layer"}, "no_such_layer"),
    ):
        with pytest.raises(ValueError, match=match):
            explorer.explain(s, **bad)


def test_warm_up_explains_one_image_with_each_method(explorer):
    traced = explorer.warm_up()
    assert list(traced) == list(explain.REAL_METHODS)
    s = explorer.select(int(explorer.table.index[0]))
    assert explorer.explain(s, method="scorecam").seconds == 0.0  # its map is kept


def test_an_image_without_mask_has_no_localisation(explorer):
    s = explorer.select(int(explorer.filter(subset="val", true="notumor").index[0]))
    assert explorer.explain(s).localisation is None


# --- uploads ---------------------------------------------------------------------------------


def test_an_upload_is_scored_as_brainmri_predict_scores_the_file(explorer, phantom_run, tmp_path):
    row = explorer.table[explorer.table["subset"] == "test"].iloc[3]
    file = explorer.run.data_root / row["path"]
    s = explorer.upload(file.name, file.read_bytes())
    assert s.key == f"upload:{file.name}" and s.label is None and s.mask is None
    assert explorer.select(s.key) is s
    info = runs.run_info(explorer.run.paths.model, explorer.run.paths.run_dir)
    table = predict.predict_scans(
        [file], explorer.run.model, info, tmp_path / "out", overlays=False, progress=False
    )
    for column in s.scores:
        expected = table.loc[0, column]
        if isinstance(expected, str | bool | np.bool_):
            assert s.scores[column] == expected
        else:  # NaN where both have none (ood_distance without ood.npz)
            assert s.scores[column] == pytest.approx(float(expected), abs=1e-5, nan_ok=True)
    # the same picture as listed: the same prediction (decoders may differ by a grey level)
    assert s.scores["predicted"] == row["predicted"]
    assert s.scores[f"p_{row['predicted']}"] == pytest.approx(
        row[f"p_{row['predicted']}"], abs=0.02
    )
    first = explorer.explain(s).cam
    assert first.shape == (explorer.size, explorer.size)
    # another scan under the same name replaces the upload, and its map is its own
    other = explorer.table[explorer.table["subset"] == "val"]["path"].iloc[0]
    again = explorer.upload(file.name, (explorer.run.data_root / other).read_bytes())
    assert again.key == s.key and explorer.select(s.key) is again
    fresh = explorer.explain(again).cam
    assert not np.allclose(fresh, first, atol=0.05)
    # the listed image's own map (decoders may differ by a grey level)
    assert np.allclose(fresh, explorer.explain(explorer.select(other)).cam, atol=0.05)


def test_png_and_dicom_uploads_are_read_and_a_bad_file_is_one_line(explorer, tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    file = explorer.run.data_root / explorer.table["path"].iloc[0]
    grey = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
    ok, encoded = cv2.imencode(".png", grey)
    assert ok
    from_png = explorer.upload("scan.PNG", encoded.tobytes())
    assert from_png.image.shape == (explorer.size, explorer.size, 3)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "slice.dcm"
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = grey.tobytes()
    ds.save_as(path, enforce_file_format=True)
    from_dicom = explorer.upload("../../etc/slice.dcm", path.read_bytes())
    assert from_dicom.name == "slice.dcm"  # a path in the name is not followed
    assert from_dicom.image.shape == from_png.image.shape
    # the DICOM's pixels stretched to 0..255 (no window in the file), the scan still dark where
    # the PNG is dark
    assert from_dicom.image.max() == 255
    dark = from_png.image[..., 0] == 0
    assert (from_dicom.image[..., 0][dark] == 0).mean() > 0.9

    with pytest.raises(ScanError, match=r"^notes.txt: unsupported file type '.txt'"):
        explorer.upload("notes.txt", b"hello")
    with pytest.raises(ScanError, match=r"^broken.jpg: "):
        explorer.upload("broken.jpg", b"\xff\xd8 not a jpeg")


def test_the_table_is_gated_as_predict_gates_a_scan(explorer):
    # A gate whose contrast bound sits at the table images' median refuses about half of them;
    # the table flags exactly those, by the gate, with predict's reason and row for each.
    import dataclasses

    from brainmri.data.scans import read_pixels
    from brainmri.explore.table import build_table, table_logits
    from brainmri.ood.gate import REASONS, GateBounds, measure
    from brainmri.predict import Predictor

    run, rows = explorer.run, explorer.run.manifest
    rows = rows[rows["subset"].isin(["val", "test"])].reset_index(drop=True)
    contrast = np.array([measure(read_pixels(f))["contrast"] for f in run.files(rows)])
    gate = GateBounds(
        low={}, high={"contrast": float(np.median(contrast))}, quantile=0.5, n_images=1
    )
    info = dataclasses.replace(explorer.info, gate=gate)
    table = build_table(run, info, rows, *table_logits(run, info, rows, cache=False))
    refused = contrast > gate.high["contrast"]
    assert 0 < refused.sum() < len(rows)
    assert (table["ood_flag"].to_numpy()[refused]).all()
    assert (table.loc[refused, "ood_layer"] == "gate").all()
    assert (table.loc[refused, "ood_reason"] == REASONS["contrast"]).all()
    assert not (table.loc[~refused, "ood_layer"] == "gate").any()
    first = int(np.flatnonzero(refused)[0])
    (row,) = Predictor(run.model, info, batch_size=1).predict([run.files(rows)[first]]).rows
    for column in ("ood_flag", "ood_layer", "ood_reason", "predicted"):
        assert row[column] == table.loc[first, column]
