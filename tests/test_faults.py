"""The fault suite: hostile names, bad data, corrupted artefacts, interruptions, concurrent runs.

Each case asserts a clear one-line outcome and that nothing outside the profile's own folder
(reports/<profile>/, and data/) changed. The cases that need a real run use the smoke profile in
a copy of the project; the others call the code directly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainmri import choice, cli, config, data, pipeline, sources
from brainmri.config import CLASS_NAMES, SPLITS, ParamError, Paths
from brainmri.lock import ProfileBusy, profile_lock

TRAIN, TEST = SPLITS


def _jpeg(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)
    return cv2.imencode(".jpg", cv2.resize(image, (64, 64)))[1].tobytes()


def _dataset(root: Path, per_class: int = 3, skip: tuple[str, str] | None = None) -> Path:
    n = 0
    for split in SPLITS:
        for label in CLASS_NAMES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                n += 1
                if (split, label) != skip:
                    (folder / f"img{i}.jpg").write_bytes(_jpeg(n))
    return root


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (a decompression bomb's header)."""
    small = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    ihdr = struct.pack(">II", width, height) + small[24:29]
    chunk = b"IHDR" + ihdr
    return (
        small[:8]
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + small[33:]
    )


def _chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _zlib_zeros(total: int, block: int = 1 << 20) -> bytes:
    """A zlib stream of total zero bytes, made in milliseconds: a block compressed after a full
    flush is the same bytes wherever it stands, so one is compressed and repeated."""
    if total < 2 * block:
        return zlib.compress(bytes(total), 9)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflate.compress(bytes(block))
    deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(bytes(block)) + deflate.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(total, block)
    body = again * full + deflate.compress(bytes(rest)) + deflate.flush()
    adler = ((total % 65521) << 16) | 1  # the Adler-32 of zeros: a stays 1, b counts them
    return b"\x78\xda" + body + struct.pack(">I", adler)


def _png_bomb(side: int, *, bad_text_crc: bool = True) -> bytes:
    """A real side x side grey PNG of zeros (a 30000 one is 0.9 MB), with a text chunk whose
    checksum is wrong: PIL refuses the file, libpng (OpenCV) only warns and decodes it."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    text = _chunk(b"tEXt", b"Comment\0bad", crc=0) if bad_text_crc else b""
    idat = _chunk(b"IDAT", _zlib_zeros(side * (side + 1)))  # a filter byte, then the row
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + text + idat + _chunk(b"IEND", b"")


def _hdr(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A Radiance HDR image (OpenCV decodes it to float32 RGB by content, whatever its name),
    with only its first rows where given (the header is what a bomb needs)."""
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode()
    pixels = width * (height if rows is None else rows)
    return header + bytes([128, 128, 128, 129]) * pixels  # flat pixels, no RLE


def _dicom_rle_bomb(path: Path, side: int) -> Path:
    """An 8-bit side x side RLE Lossless DICOM of zeros, written by hand (64 runs of 128 bytes
    a row, 2 bytes each): an 8192 one is 1 MB on disk and 64 MB decoded, and pydicom's LUTs
    used to take float64 copies of it."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, generate_uid

    runs, rest = divmod(side, 128)
    row = b"\x81\x00" * runs + (bytes([257 - rest, 0]) if rest else b"")
    segment = row * side
    segment += b"\x00" * (len(segment) % 2)
    frame = struct.pack("<16I", 1, 64, *[0] * 14) + segment
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.save_as(path, enforce_file_format=True)
    return path


# --- names that could reach outside params/ or reports/ ------------------------------------------


@pytest.mark.parametrize("name", ["..", "../../sibling", "/", "a/b", ".hidden", "", "x" * 65])
def test_a_profile_name_is_a_plain_name(name, tmp_path):
    with pytest.raises(ParamError, match="not a profile name"):
        Paths(root=tmp_path, profile=name)
    with pytest.raises(ParamError, match="not a profile name"):
        config.load_profile(name)


def test_clean_refuses_a_path_and_deletes_nothing(tmp_path, project_root, capsys):
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "keep.txt").write_text("mine")
    root = tmp_path / "repo"
    (root / "reports" / "demo").mkdir(parents=True)
    (root / "params").mkdir()
    (root / "params" / "default.yaml").touch()  # a project, so the name is what is refused
    for name in ("..", "../../sibling", "/", "../repo"):
        assert cli.main(["--root", str(root), "clean", "--profile", name]) == 2
        assert "not a profile name" in capsys.readouterr().err
    assert (sibling / "keep.txt").read_text() == "mine" and (root / "reports" / "demo").is_dir()


def test_a_profile_cannot_be_run_twice_at_once(tmp_path):
    paths = Paths(root=tmp_path, profile="smoke")
    with profile_lock(paths):
        assert (paths.run_dir / ".lock").read_text().strip() == str(os.getpid())
        with (
            pytest.raises(ProfileBusy, match=f"in use by process {os.getpid()}"),
            profile_lock(paths),
        ):
            pass
    with profile_lock(paths):  # released: a later run goes ahead
        pass


# --- parameters and DATA_DIR ---------------------------------------------------------------------


def test_cross_field_rules_are_part_of_validation():
    with pytest.raises(ParamError, match="'model.weights' = 'imagenet' is not allowed with"):
        config.load_profile("smoke", overrides={"weights": "imagenet"})
    for half in ({"lesion_guidance": 2.0}, {"guidance_epochs": 2}):  # a guided phase needs both
        with pytest.raises(ParamError, match="'train.lesion_guidance' = .* do not go together"):
            config.load_profile("smoke", overrides=half)
    guided = config.load_profile("smoke", overrides={"lesion_guidance": 2.0, "guidance_epochs": 1})
    assert guided["train"]["guidance_epochs"] == 1
    with pytest.raises(ParamError, match="'train.guidance_distillation' = 0.5 needs a guided"):
        config.load_profile("smoke", overrides={"guidance_distillation": 0.5})


def test_a_data_dir_without_the_data_set_is_refused(tmp_path):
    with pytest.raises(ParamError, match=r"DATA_DIR=.*no Training/ folder"):
        choice.choose_profile(tmp_path, None, str(tmp_path / "typo"), env={"HOME": str(tmp_path)})
    with pytest.raises(ParamError, match="no Training/ folder"):
        choice.choose_profile(tmp_path, "cpu", str(tmp_path), env={"HOME": str(tmp_path)})


def test_a_data_dir_the_profile_would_ignore_is_refused(tmp_path, project_root):
    real = _dataset(tmp_path / "data")
    with pytest.raises(ParamError, match="DATA_DIR=.* would be ignored: profile 'smoke' reads"):
        cli._check_data_dir_is_used(project_root, "smoke", str(real))
    cli._check_data_dir_is_used(project_root, "cpu", str(real))  # cpu reads data_dir


# --- profile files -------------------------------------------------------------------------------


@pytest.fixture()
def params_copy(tmp_path, project_root) -> Path:
    """A project root holding a copy of the real params/ folder."""
    (tmp_path / "params").mkdir()
    for path in (project_root / "params").glob("*.yaml"):
        (tmp_path / "params" / path.name).write_bytes(path.read_bytes())
    return tmp_path


def _refused(root: Path, content: bytes, snapshot) -> str:
    """Load params/bad.yaml holding content; return the ParamError's message (one line)."""
    (root / "params" / "bad.yaml").write_bytes(content)
    before = snapshot(root)
    with pytest.raises(ParamError) as err:
        config.load_profile("bad", root=root)
    assert snapshot(root) == before  # loading a profile writes nothing
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{root}/params/bad.yaml")
    return message


def test_yaml_aliases_are_refused_before_they_expand(params_copy, snapshot):
    # "billion laughs": each level ten aliases of the one before; four levels keep this test
    # small even if the refusal broke (nine would be a billion strings)
    levels = ['l0: &l0 "lol"'] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 5)
    ]
    text = "description: {" + ", ".join(levels) + "}\n"
    message = _refused(params_copy, text.encode(), snapshot)
    assert "line 1" in message and "found the alias '*l0'" in message
    assert "anchors and aliases are not allowed" in message
    one = _refused(params_copy, b"train:\n  epochs: &n 3\n  batch_size: *n\n", snapshot)
    assert "line 3, column 15: found the alias '*n'" in one


@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", "12", "null", "true"])
def test_the_description_is_type_checked_like_every_key(params_copy, snapshot, value):
    message = _refused(params_copy, f"description: {value}\n".encode(), snapshot)
    assert "'description' = " in message and "is not allowed: expected a string" in message


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        # a second section would reset every key of the first to its default
        ("train:\n  epochs: 3\n  batch_size: 8\ntrain:\n  epochs: 4\n", "line 4, col", "train"),
        ("train:\n  epochs: 3\n  epochs: 4\n", "line 3, column 3", "epochs"),
        ("description: a\ndescription: b\n", "line 2, column 1", "description"),
        ("train: {epochs: 3, epochs: 4}\n", "line 1, column 20", "epochs"),
    ],
)
def test_duplicate_keys_and_sections_are_refused_with_the_line(
    params_copy, snapshot, text, where, key
):
    message = _refused(params_copy, text.encode(), snapshot)
    assert f"{where}" in message and f"duplicate key '{key}' (first at line" in message


def test_invalid_utf8_is_a_parameter_error_naming_the_line(params_copy, snapshot):
    message = _refused(params_copy, b"description: ok\ntrain:\n  epochs: \xff3\n", snapshot)
    assert "not UTF-8 text (line 3, byte 33" in message and "save the profile as UTF-8" in message


@pytest.mark.parametrize(
    "text",
    [
        "description: " + "[" * 5000 + "]" * 5000,
        "train:\n" + "".join("  " * depth + f"k{depth}:\n" for depth in range(1, 5000)),
    ],
    ids=["flow", "block"],
)
def test_deep_nesting_is_a_parameter_error_not_a_recursion_error(params_copy, snapshot, text):
    message = _refused(params_copy, text.encode(), snapshot)
    assert f"nested more than {config.profiles.MAX_DEPTH} levels deep" in message


def test_a_value_yaml_cannot_build_is_a_parameter_error(params_copy, snapshot):
    assert "month must be in 1..12" in _refused(params_copy, b"description: 2020-13-45\n", snapshot)


# --- data ----------------------------------------------------------------------------------------


def test_a_decompression_bomb_is_excluded_unread(tmp_path):
    root = _dataset(tmp_path / "ds")
    bomb = root / TRAIN / "glioma" / "bomb.png"
    bomb.write_bytes(_png_declaring(30000, 30000))
    manifest = data.scan_dataset(root).set_index("path")
    row = manifest.loc[f"{TRAIN}/glioma/bomb.png"]
    assert row["status"] == "excluded"
    assert row["reason"].startswith("too large") and "900000000" in row["reason"]
    within_pil = root / TRAIN / "glioma" / "big.png"
    within_pil.write_bytes(_png_declaring(10000, 5000))  # below PIL's limit, above ours
    reason = data.scan_dataset(root).set_index("path").loc[f"{TRAIN}/glioma/big.png", "reason"]
    assert reason.startswith("too large: 10000x5000 pixels declared, more than the limit")
    assert (manifest.drop(index=[row.name])["status"] == "ok").all()
    small = data.scan_dataset(root, max_pixels=64 * 64 - 1)
    assert (small["status"] == "excluded").all()  # the limit is a parameter


def test_an_image_is_measured_from_its_header_before_any_decoder(tmp_path):
    """PIL refuses a PNG for a bad text-chunk checksum that OpenCV would decode (30000 x 30000:
    3.7 GB); OpenCV decodes a Radiance HDR named .png by content. Neither reaches a decoder."""
    root = _dataset(tmp_path / "ds", per_class=1)
    glioma = root / TRAIN / "glioma"
    (glioma / "crc30k.png").write_bytes(_png_bomb(30000))
    (glioma / "crc20k.png").write_bytes(_png_bomb(20000))
    (glioma / "hdr.png").write_bytes(_hdr(8, 8))
    (glioma / "png.jpg").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1])
    (glioma / "sizeless.jpg").write_bytes(b"\xff\xd8\xff\xda\x00\x08" + bytes(8) + b"\xff\xd9")
    (glioma / "crc_small.png").write_bytes(_png_bomb(64))  # measured, within the limit: read
    rows = data.scan_dataset(root).set_index("path")["reason"]
    reasons = {Path(path).name: reason for path, reason in rows.items() if reason}
    assert reasons == {
        "crc30k.png": "too large: 30000x30000 pixels declared, more than the limit of "
        "40,000,000 (data.max_image_pixels); not decoded",
        "crc20k.png": "too large: 20000x20000 pixels declared, more than the limit of "
        "40,000,000 (data.max_image_pixels); not decoded",
        "hdr.png": "the content is Radiance HDR, not the PNG its extension .png says; not decoded",
        "png.jpg": "the content is PNG, not the JPEG its extension .jpg says; not decoded",
        "sizeless.jpg": "truncated or corrupt: a JPEG header without a readable size; not decoded",
    }
    assert data.load_image(glioma / "crc_small.png", 8).shape == (8, 8, 3)
    with pytest.raises(ValueError, match=r"hdr\.png: unreadable image: the content is Radiance"):
        data.load_image(glioma / "hdr.png", 8)


def test_decoded_bytes_count_against_the_limit(tmp_path):
    """A float RGB TIFF decodes to 12 bytes a pixel: the limit allows 8 (16-bit RGBA)."""
    from brainmri.data import headers, images

    def tiff_header(width: int, height: int, samples: int, bits: int) -> bytes:
        entries = [(256, 4, 1, width), (257, 4, 1, height), (277, 3, 1, samples)]
        entries.append((258, 3, samples, 8 + 2 + 12 * 4 + 4))  # BitsPerSample, after the IFD
        ifd = b"".join(struct.pack("<HHII", *entry) for entry in entries)
        return (
            b"II*\x00"
            + struct.pack("<IH", 8, 4)
            + ifd
            + bytes(4)
            + struct.pack(f"<{samples}H", *[bits] * samples)
        )

    header = headers.measure_image(tiff_header(6000, 6000, 3, 32), ".tif")
    assert header[:4] == ("TIFF", 6000, 6000, 12)
    with pytest.raises(ValueError, match="too large: 6000x6000 pixels of 12 bytes declared"):
        images.decode_image_bytes(tiff_header(6000, 6000, 3, 32), suffix=".tiff")
    assert headers.measure_image(tiff_header(6000, 6000, 4, 16))[3] == 8  # at the bound: allowed


def test_a_dicom_declaring_a_huge_slice_is_refused_before_decoding(tmp_path):
    from brainmri.data import scans

    small = scans.read_scan(_dicom_rle_bomb(tmp_path / "small.dcm", 300), 16)
    assert small.shape == (16, 16, 3) and not small.any()  # the crafted RLE decodes
    bomb = _dicom_rle_bomb(tmp_path / "bomb.dcm", 8192)
    assert bomb.stat().st_size < 1_100_000
    with pytest.raises(scans.ScanError) as refused:
        scans.read_scan(bomb, 16)
    assert str(refused.value) == (
        "too large: 8192x8192 pixels declared, more than the limit of 40,000,000 "
        "(data.max_image_pixels); not decoded"
    )


def test_the_bombs_stay_under_1_gb_in_a_child_process(tmp_path):
    """Each bomb read by read_scan in a fresh process, whose peak resident memory is then its
    reading's; an address-space cap of 3 GB keeps a regression from taking the machine.

    The peak is the child's VmHWM (its own address space's high-water mark), not ru_maxrss:
    Linux carries the parent's peak into ru_maxrss across vfork + exec, so a pytest worker that
    had loaded TensorFlow read 1.6 GB for a child that decoded nothing."""
    too_large = "too large: "
    expected = {
        "crc30k.png": too_large + "30000x30000",
        "crc20k.png": too_large + "20000x20000",
        "hdr.png": "the content is Radiance HDR",  # 11547 x 11547: a 1.6 GB float32 decode
        "rle8k.dcm": too_large + "8192x8192",
    }
    (tmp_path / "crc30k.png").write_bytes(_png_bomb(30000))
    (tmp_path / "crc20k.png").write_bytes(_png_bomb(20000))
    (tmp_path / "hdr.png").write_bytes(_hdr(11547, 11547, rows=1))
    _dicom_rle_bomb(tmp_path / "rle8k.dcm", 8192)
    child = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from brainmri.data import scans
try:
    scans.read_scan(sys.argv[1], 32)
    print("decoded")
except scans.ScanError as exc:
    print(exc)
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(status.split()[0])  # kB
"""
    env = {**os.environ, "PYTHONPATH": str(Path(data.__file__).parents[2])}
    for name, reason in expected.items():
        done = subprocess.run(
            [sys.executable, "-c", child, str(tmp_path / name)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        said, peak_kb = done.stdout.strip().splitlines()
        assert said.startswith(reason) and said.endswith("not decoded"), (name, said)
        assert int(peak_kb) < 1 << 20, f"{name}: {int(peak_kb) >> 10} MB at peak"


def test_an_empty_training_class_stops_and_an_empty_testing_class_warns(tmp_path):
    cfg = config.flat_params(config.load_profile("smoke", overrides={"protocol": "official"}))
    empty = _dataset(tmp_path / "a", skip=(TRAIN, "pituitary"))
    with pytest.raises(
        data.DataSourceError, match=r"no usable Training image of class\(es\) \['pituitary'\]"
    ):
        sources.build_manifest(empty, cfg)
    no_test = _dataset(tmp_path / "b", skip=(TEST, "notumor"))
    manifest, _ = sources.build_manifest(no_test, cfg)
    warnings = sources.data_warnings(manifest, protocol="official")
    assert any("official Testing split has no notumor image" in w for w in warnings)
    assert any("headline test split has no notumor image" in w for w in warnings)


def test_a_zip_entry_through_a_symlink_entry_gets_the_projects_error(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("data/up")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "..")
        zf.writestr("data/up/x.txt", "through the link")
    with pytest.raises(data.DataSourceError, match="evil.zip: refusing to extract|cannot extract"):
        data.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "x.txt").exists()


# --- artefacts and their hashes ------------------------------------------------------------------


def test_a_changed_or_unreadable_output_makes_its_stage_out_of_date(tmp_path):
    paths = Paths(root=tmp_path, profile="demo")
    for path in pipeline.stage_outputs(paths, "03_train"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(path.name.encode())
    stamp = {"key": "k", "outputs": pipeline.output_hashes(paths, "03_train")}
    pipeline.stamp_path(paths, "03_train").parent.mkdir(parents=True)
    pipeline.stamp_path(paths, "03_train").write_text(json.dumps(stamp))
    assert pipeline.is_up_to_date(paths, "03_train", "k")
    assert not pipeline.is_up_to_date(paths, "03_train", "other key")
    paths.model.write_bytes(b"truncated")
    assert not pipeline.is_up_to_date(paths, "03_train", "k")
    paths.model.unlink()
    assert not pipeline.is_up_to_date(paths, "03_train", "k")


def test_a_read_only_reports_folder_ends_in_one_line(monkeypatch, capsys, tmp_path):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "reports" / "smoke"))

    monkeypatch.setattr(pipeline, "run_pipeline", refuse)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "default.yaml").touch()
    assert cli.main(["--root", str(tmp_path), "run", "--profile", "smoke", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {tmp_path}/reports/smoke: permission denied (EACCES); check the owner and "
        "permissions of that path"
    ]


def test_reports_are_written_readable_by_others(tmp_path):
    path = tmp_path / "manifest.csv"
    old = os.umask(0o022)
    try:
        data.write_manifest(data.scan_dataset(_dataset(tmp_path / "ds", per_class=1)), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --- end to end, with the smoke profile ----------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_runs_leave_one_complete_consistent_run(project_copy, make, make_background):
    # UNTIL=03_train: the lock and the training outputs are the point; 04 and 05 would add 25 s
    first = make_background(project_copy, "all", "PROFILE=smoke", "UNTIL=03_train")
    lock = project_copy / "reports" / "smoke" / ".lock"
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    second = make(project_copy, "all", "PROFILE=smoke")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:] + err[-2000:]
    assert second.returncode != 0
    assert "profile 'smoke' is in use by process" in second.stderr
    run = project_copy / "reports" / "smoke"
    history = (run / "history.csv").read_text().strip().splitlines()
    run_json = json.loads((run / "run.json").read_text())
    assert len(history) - 1 == run_json["summary"]["epochs_run"]


@pytest.mark.slow
def test_a_corrupted_model_reruns_its_stage(project_copy, make):
    run = project_copy / "reports" / "smoke"
    if not (run / ".state" / "03_train.done.json").is_file():
        pytest.skip("needs the completed smoke run of the concurrency test")
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:1000])
    # UNTIL=03_train: the stage that owns the model is the point; 04 and 05 would follow it
    result = make(project_copy, "all", "PROFILE=smoke", "UNTIL=03_train")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[01_download] up to date" in result.stdout and "[03_train] running" in result.stdout
    assert "until 03_train: 04_evaluate, 05_gradcam not run" in result.stdout
    from brainmri.model import load_model

    assert load_model(run / "model.keras").name.startswith("brainmri")


@pytest.mark.slow
def test_a_failed_first_stage_keeps_the_last_good_parameters(project_copy, make, edit_param):
    run = project_copy / "reports" / "smoke"
    before = json.loads((run / "metrics.json").read_text())
    original = (project_copy / "params" / "smoke.yaml").read_text()
    edit_param(project_copy, "smoke", "data", "phantom_size", "33")  # reruns 01 ...
    edit_param(project_copy, "smoke", "data", "data_source", "kaggle")  # ... which fails offline
    try:
        result = make(project_copy, "all", "PROFILE=smoke")
    finally:
        (project_copy / "params" / "smoke.yaml").write_text(original)
    assert result.returncode != 0 and "stage 01_download failed" in result.stderr
    after = json.loads((run / "metrics.json").read_text())
    assert after["failed_stage"] == "01_download"
    assert after["params"] == before["params"] and after["train"] == before["train"]
    assert "The last run failed at stage 01_download" in (run / "index.html").read_text()


@pytest.mark.slow
def test_make_refuses_paths_as_profiles_and_ignored_data_dirs(project_copy, make, tmp_path):
    outside = project_copy.parent / "x"
    outside.mkdir(exist_ok=True)
    (outside / "evil.yaml").write_text("description: outside params/\n")
    listing = sorted(p.name for p in project_copy.parent.iterdir())
    for args in (
        ["clean", "PROFILE=.."],
        ["clean", "PROFILE=../../x"],
        ["all", "PROFILE=../x/evil"],
    ):
        result = make(project_copy, *args)
        assert result.returncode != 0 and "not a profile name" in result.stderr, args
    assert sorted(p.name for p in project_copy.parent.iterdir()) == listing
    assert (project_copy / "Makefile").is_file()
    real = _dataset(tmp_path / "real")
    result = make(project_copy, "all", "PROFILE=smoke", f"DATA_DIR={real}")
    assert result.returncode != 0 and "would be ignored" in result.stderr
    result = make(project_copy, "all", f"DATA_DIR={tmp_path / 'typo'}")
    assert result.returncode != 0 and "no Training/ folder" in result.stderr
    assert not (project_copy / "reports" / "demo").exists()


@pytest.mark.slow
def test_ctrl_c_ends_in_one_line_and_keeps_the_partial_notebook(project_copy, make_background):
    # Last of the module: where the interrupt lands (03, or 04 on a loaded machine) decides
    # what the run leaves behind, and no later test may depend on that.
    config_file = project_copy / "params" / "smoke.yaml"
    original = config_file.read_text()
    config_file.write_text(original.replace("epochs: 2", "epochs: 200"))  # time to interrupt
    try:
        run = project_copy / "reports" / "smoke"
        for stamp in (run / ".state").glob("03_train.done.json"):
            stamp.unlink()  # 03 must run
        proc = make_background(project_copy, "all", "PROFILE=smoke")
        history = run / "history.csv"
        mtime = history.stat().st_mtime if history.exists() else 0
        deadline = time.time() + 300
        while time.time() < deadline:  # an epoch has finished: training is under way
            if history.exists() and history.stat().st_mtime > mtime:
                break
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        config_file.write_text(original)
    assert proc.returncode != 0
    assert "stage 03_train was interrupted (Ctrl-C)" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert (run / "failed" / "03_train.ipynb").is_file()
    assert not list((run / ".state").glob("*.running.ipynb"))


def test_a_mask_bomb_is_refused_by_name_before_any_decoder_runs(tmp_path):
    """Tumour masks come from the user's MASK_DIR: they pass the same size guard as scans."""
    from brainmri.phantom.masks import load_mask

    images, masks = tmp_path / "data", tmp_path / "masks"
    scan = images / TRAIN / "glioma" / "a.jpg"
    scan.parent.mkdir(parents=True)
    cv2.imwrite(str(scan), np.full((64, 64), 120, np.uint8))
    bomb = masks / TRAIN / "glioma" / "a.png"
    bomb.parent.mkdir(parents=True)
    bomb.write_bytes(_png_bomb(30000))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bomb))}: unreadable image: too large"):
        data.read_grey(bomb)
    with pytest.raises(ValueError, match=re.escape(str(bomb))):
        load_mask(scan, images, mask_root=masks)
