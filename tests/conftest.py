"""Shared fixtures: the project root, the real data set (where present) and a tiny phantom set."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "brain-tumor-mri-dataset"


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root."""
    return ROOT


def tree_state(folder: Path) -> dict[str, str]:
    """Every entry under folder, links not followed: its kind, and its bytes' hash or link target.

    Two calls compare equal only when nothing under folder was created, removed or changed.
    """
    import hashlib

    state: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            state[name] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            state[name] = "dir"
        else:
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="session")
def snapshot():
    """tree_state(folder): what is under a folder, to assert that nothing there changed."""
    return tree_state


@pytest.fixture(scope="session")
def load_script(project_root):
    """load_script("tools/x.py"): a script of the project (tools/, benchmarks/) as a module."""

    def load(relative: str):
        path = project_root / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared copy of the Kaggle data set; skips the test where it is absent."""
    if not (REAL_DATA / "Training").is_dir():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory) -> Path:
    """A small phantom data set with masks, generated once per test session."""
    from brainmri.phantom import generate_phantom_dataset

    return generate_phantom_dataset(
        tmp_path_factory.mktemp("phantom"), train_per_class=10, test_per_class=4, size=64, seed=3
    )


@pytest.fixture(scope="session")
def trained_phantom(tmp_path_factory):
    """A compact CNN trained briefly on phantoms: (model, data root, image size, history)."""
    from brainmri import inputs, training
    from brainmri import model as mdl
    from brainmri.config import CLASS_NAMES, load_profile
    from brainmri.phantom import generate_phantom_dataset

    root = generate_phantom_dataset(tmp_path_factory.mktemp("phantom_train"), 100, 20, 128, seed=11)
    p = load_profile("demo")
    no_aug = dict.fromkeys(
        ("aug_rotation", "aug_width_shift", "aug_height_shift", "aug_shear", "aug_zoom"), 0.0
    )
    cfg = {**p["run"], **p["model"], **p["train"], **no_aug, "epochs": 24}
    out = tmp_path_factory.mktemp("phantom_run")

    # Validation is every fifth Training image: the Testing images stay unseen for the tests.
    files = sorted((root / "Training").glob("*/*.jpg"))
    labels = [CLASS_NAMES.index(f.parent.name) for f in files]
    val_idx = set(range(0, len(files), 5))
    split = {
        part: (
            [f for i, f in enumerate(files) if (i in val_idx) == (part == "val")],
            [y for i, y in enumerate(labels) if (i in val_idx) == (part == "val")],
        )
        for part in ("train", "val")
    }
    training.seed_everything(cfg["seed"])
    size = cfg["image_size"]
    train = inputs.make_dataset(*split["train"], size, 32, shuffle=True, seed=1)
    val = inputs.make_dataset(*split["val"], size, 32)
    model = mdl.build_model(cfg)
    files = {"model_path": out / "model.keras", "history_path": out / "history.csv"}
    training.prepare_state(out / "state", cfg, manifest_sha256="fixture", **files)
    history = training.fit(model, train, val, cfg, state_dir=out / "state", **files)
    return mdl.load_model(out / "model.keras"), root, size, history


# --- end-to-end: copies of the project and make -------------------------------------------------

FAKE_KEY = "f4k3k3y0123456789abcdef0fakekey"
"""A Kaggle key planted in every make run's environment: no output may ever show it."""


def copy_project(target: Path) -> Path:
    """Copy the tracked project files to target, as a fresh clone would have them."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / name)
    return target


def make_args(*args: str) -> list[str]:
    """A make command line in a copy, reusing this test run's environment (no second set-up)."""
    return ["make", "--no-print-directory", *args, f"VENV={sys.prefix}", "SKIP_SETUP=1"]


def make_env() -> dict[str, str]:
    """The environment of a make run, with a planted (fake) Kaggle key."""
    return {**os.environ, "KAGGLE_USERNAME": "planted-user", "KAGGLE_KEY": FAKE_KEY}


def run_make(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run make in a copy of the project and wait for it."""
    return subprocess.run(
        make_args(*args), cwd=root, capture_output=True, text=True, timeout=timeout, env=make_env()
    )


def set_param(root: Path, profile: str, section: str, key: str, value: str) -> None:
    """Edit params/<profile>.yaml of a copy: set section.key (added when absent)."""
    path = root / "params" / f"{profile}.yaml"
    text = path.read_text()
    pattern = re.compile(rf"^(  {key}:).*$", re.MULTILINE)
    block = re.search(rf"^{section}:\n((?:  .*\n)*)", text, re.MULTILINE)
    if block and pattern.search(block.group(0)):
        new_block = pattern.sub(rf"\g<1> {value}", block.group(0))
        text = text.replace(block.group(0), new_block)
    elif block:
        text = text.replace(block.group(0), block.group(0) + f"  {key}: {value}\n")
    else:
        text += f"\n{section}:\n  {key}: {value}\n"
    path.write_text(text)


def start_make(root: Path, *args: str) -> subprocess.Popen:
    """Start make in a copy of the project in its own process group, without waiting."""
    return subprocess.Popen(
        make_args(*args),
        cwd=root,
        env=make_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a test can Ctrl-C all of it
        # pytest-xdist's workers ignore SIGINT, and an ignored signal stays ignored across exec:
        # give the run the default disposition, as in a terminal, so Ctrl-C reaches it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    """A copy of the tracked project files for one test module's end-to-end runs."""
    return copy_project(tmp_path_factory.mktemp("clone") / "repo")


@pytest.fixture(scope="session")
def make():
    """run_make(root, *args, timeout=600): make in a project copy (see copy_project)."""
    return run_make


@pytest.fixture(scope="session")
def make_background():
    """start_make(root, *args): make in a project copy, running in the background."""
    return start_make


@pytest.fixture(scope="session")
def planted_key() -> str:
    """The fake Kaggle key every make run carries (FAKE_KEY)."""
    return FAKE_KEY


@pytest.fixture(scope="session")
def edit_param():
    """set_param(root, profile, section, key, value): edit a copy's params/<profile>.yaml."""
    return set_param


@pytest.fixture(scope="session")
def fresh_copy():
    """copy_project(target): the tracked project files copied to target (one more "machine")."""
    return copy_project


@pytest.fixture(scope="session")
def make_command():
    """make_command(*args) -> (argv, env): a make run in a copy, for tests that start it themselves."""
    return lambda *args: (make_args(*args), make_env())


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist (`make test` runs two workers with ``--dist loadgroup``).

    A module's tests stay together on one worker, in order, because they share module fixtures
    (a project copy whose first run later tests build on); every test of the trained phantom
    model runs on one worker, because a session fixture is built once per worker and that one
    trains for two minutes.

    The groups are then ordered longest first (the trained fixture, then by their number of
    ``slow`` tests), and make passes ``--no-loadscope-reorder`` so xdist hands them out in this
    order: a long group started last would leave one worker idle while the other finishes it.
    """
    groups: dict[str, list] = {}
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        group = "trained_phantom" if "trained_phantom" in fixtures else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
        groups.setdefault(group, []).append(item)

    def longest_first(name: str) -> tuple[bool, int]:
        slow = sum(item.get_closest_marker("slow") is not None for item in groups[name])
        return name != "trained_phantom", -slow

    items[:] = [item for name in sorted(groups, key=longest_first) for item in groups[name]]


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(size="256k", read_only=False): a fresh tmpfs of that size, unmounted after the
    test; skips where mounting is not permitted (not root, no mount, a container without the
    capability)."""
    mounted: list[Path] = []

    def mount(size: str = "256k", read_only: bool = False) -> Path:
        target = tmp_path / f"disk{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if shutil.which("mount") is None or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    import gc

    gc.collect()  # a failed run's open files (Keras' CSVLogger) keep the mount busy
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)  # detach it


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """The smoke profile's tiny CNN, untrained, saved as a model.keras file (predict, serve)."""
    from brainmri import config
    from brainmri import model as mdl

    params = config.flat_params(config.load_profile("smoke"))
    path = tmp_path_factory.mktemp("model") / "model.keras"
    mdl.build_model({**params, "image_size": 32}).save(path)
    return path


@pytest.fixture(scope="session")
def chromium():
    """The Chromium binary for the browser tests; they skip where none (or no Playwright) is."""
    from brainmri.reports import browser

    try:
        import playwright  # noqa: F401

        return browser.find_chromium()
    except (ImportError, browser.BrowserMissing) as exc:
        pytest.skip(f"no browser here: {exc}")
