"""The fault suite at the command line: the folder a command works in, symlinked and read-only
report folders, and make's variables.

Each case asserts the one-line outcome and that nothing outside the project's own outputs
changed; none trains or runs a notebook.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from brainmri import cli, pipeline

# Every command that writes or deletes, with the arguments it needs to get that far (and serve,
# which finds its profile's model in the project the same way).
WRITING_COMMANDS = [
    ["clean", "--profile", "notes"],
    ["run", "--profile", "notes", "--quiet"],
    ["html", "--profile", "notes"],
    ["screenshots", "--profile", "notes"],
    ["export", "--profile", "notes"],
    ["predict", "scan.png", "--profile", "notes"],
    ["predict", "scan.png", "--model", "m.keras"],
    ["serve", "--profile", "notes"],
]


def _project(root: Path) -> Path:
    """A minimal brainmri project at root: what makes a folder one is params/default.yaml."""
    (root / "params").mkdir(parents=True)
    (root / "params" / "default.yaml").write_text("description: a project\n")
    return root


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- the project root ----------------------------------------------------------------------------


@pytest.fixture()
def not_a_project(tmp_path, monkeypatch) -> Path:
    """A working directory that is not a checkout, holding a reports/notes of its own."""
    folder = tmp_path / "elsewhere"
    (folder / "reports" / "notes").mkdir(parents=True)
    (folder / "reports" / "notes" / "keep.txt").write_text("not the project's")
    (folder / "scan.png").write_bytes(b"not read")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("BRAINMRI_ROOT", raising=False)
    return folder


@pytest.mark.parametrize("argv", WRITING_COMMANDS, ids=lambda a: "-".join(a[::2]))
def test_a_writing_command_outside_a_project_stops_and_touches_nothing(
    not_a_project, snapshot, capsys, argv
):
    before = snapshot(not_a_project.parent)
    assert cli.main(argv) == 2
    line = _one_error_line(capsys)
    assert line == (
        f"error: {not_a_project} is not in a brainmri project: no folder from it up holds "
        "params/default.yaml; run from the project's folder (or set BRAINMRI_ROOT)"
    )
    assert snapshot(not_a_project.parent) == before


def test_a_root_or_brainmri_root_that_is_not_a_project_is_refused(
    not_a_project, snapshot, capsys, monkeypatch
):
    before = snapshot(not_a_project.parent)
    assert cli.main(["--root", str(not_a_project), "clean", "--profile", "notes"]) == 2
    assert _one_error_line(capsys) == (
        f"error: --root {not_a_project}: not a brainmri project (no params/default.yaml "
        "there); give the project's folder"
    )
    monkeypatch.setenv("BRAINMRI_ROOT", str(not_a_project))
    assert cli.main(["clean", "--profile", "notes"]) == 2
    assert "error: BRAINMRI_ROOT=" in _one_error_line(capsys)
    assert snapshot(not_a_project.parent) == before


def test_a_command_in_a_subfolder_works_in_its_project(tmp_path, monkeypatch, snapshot, capsys):
    project = _project(tmp_path / "repo")
    (project / "reports" / "notes").mkdir(parents=True)
    (project / "notebooks" / "reports" / "notes").mkdir(parents=True)  # not the project's
    monkeypatch.chdir(project / "notebooks")
    monkeypatch.delenv("BRAINMRI_ROOT", raising=False)
    before = snapshot(project / "notebooks")
    assert cli.main(["clean", "--profile", "notes"]) == 0
    assert capsys.readouterr().out.strip() == f"removed {project}/reports/notes"
    assert not (project / "reports" / "notes").exists()
    assert snapshot(project / "notebooks") == before


def test_reading_commands_need_no_project(not_a_project, capsys):
    assert cli.main(["choose", "--profile", "notes"]) == 0
    assert capsys.readouterr().out.startswith("profile: notes (chosen with PROFILE)")


# --- a symbolic link as reports/<profile> --------------------------------------------------------


@pytest.fixture()
def linked_profile(tmp_path, project_root) -> tuple[Path, Path]:
    """A project whose reports/demo is a symbolic link to a folder outside it: (project, target)."""
    project = tmp_path / "repo"
    (project / "params").mkdir(parents=True)
    for path in (project_root / "params").glob("*.yaml"):
        (project / "params" / path.name).write_bytes(path.read_bytes())
    target = tmp_path / "somewhere"
    target.mkdir()
    (target / "precious.txt").write_text("not the project's")
    (project / "reports").mkdir()
    (project / "reports" / "demo").symlink_to(target, target_is_directory=True)
    return project, target


@pytest.mark.parametrize(
    "argv",
    [
        ["clean", "--profile", "demo"],
        ["run", "--profile", "demo", "--quiet"],
        ["html", "--profile", "demo"],
        ["screenshots", "--profile", "demo"],
        ["export", "--profile", "demo"],
    ],
    ids=lambda a: a[0],
)
def test_nothing_is_written_or_deleted_through_a_linked_profile_folder(
    linked_profile, snapshot, capsys, argv
):
    project, target = linked_profile
    before = snapshot(project.parent)
    assert cli.main(["--root", str(project), *argv]) == 1
    assert _one_error_line(capsys) == (
        f"error: {project}/reports/demo is a symbolic link (to {target}): refusing to write or "
        "delete through it; replace the link with a folder, or remove it"
    )
    assert snapshot(project.parent) == before  # no .lock in the target; the link is kept


def test_a_dangling_profile_link_is_refused_too(linked_profile, snapshot, capsys):
    project, target = linked_profile
    (target / "precious.txt").unlink()
    target.rmdir()
    before = snapshot(project.parent)
    assert cli.main(["--root", str(project), "clean", "--profile", "demo"]) == 1
    assert "is a symbolic link" in _one_error_line(capsys)
    assert snapshot(project.parent) == before and not target.exists()


def test_a_linked_reports_folder_is_the_projects_outputs_moved(tmp_path):
    project = _project(tmp_path / "repo")
    moved = tmp_path / "big-disk" / "reports"
    (moved / "demo").mkdir(parents=True)
    (moved / "keep").mkdir()
    (project / "reports").symlink_to(moved, target_is_directory=True)
    assert cli.main(["--root", str(project), "clean", "--profile", "demo"]) == 0
    assert not (moved / "demo").exists() and (moved / "keep").is_dir()


# --- read-only disks and paths that cannot be folders ---------------------------------------------


@pytest.fixture()
def read_only_project(tmp_path, project_root):
    """freeze(): a project with a finished-looking demo run on a tmpfs, then remounted read-only.

    Root can write through any file mode, so only a read-only mount shows EROFS; the test is
    skipped where mounting is not permitted (not root, or a container without the capability).
    """
    mount = tmp_path / "ro"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        project = mount / "repo"
        shutil.copytree(project_root / "params", project / "params")
        (project / "reports" / "demo").mkdir(parents=True)
        (project / "reports" / "demo" / "index.html").write_text("<html>a finished run</html>")

        def freeze() -> Path:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            return project

        yield freeze
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture()
def all_up_to_date(monkeypatch):
    """Every stage up to date, without notebooks or a real run to hash."""
    monkeypatch.setattr(pipeline, "stage_key", lambda *args: "key")
    monkeypatch.setattr(pipeline, "is_up_to_date", lambda *args: True)


def test_a_run_with_nothing_to_do_writes_nothing_not_even_the_lock(
    tmp_path, project_root, all_up_to_date, snapshot, capsys
):
    project = tmp_path / "repo"
    shutil.copytree(project_root / "params", project / "params")
    (project / "reports" / "demo").mkdir(parents=True)
    (project / "reports" / "demo" / "index.html").write_text("<html>a finished run</html>")
    before = snapshot(project)
    assert cli.main(["--root", str(project), "run", "--profile", "demo", "--quiet"]) == 0
    assert "nothing to do: all 5 stages of profile 'demo' are up to date" in capsys.readouterr().out
    assert snapshot(project) == before  # no .lock either


def test_a_finished_run_on_a_read_only_disk_answers(
    read_only_project, all_up_to_date, snapshot, capsys
):
    project = read_only_project()
    assert cli.main(["--root", str(project), "run", "--profile", "demo", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "nothing to do" in captured.out and captured.err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["clean", "--profile", "demo"],
        ["html", "--profile", "demo"],
        ["run", "--profile", "demo", "--quiet", "--force"],  # a stage to run: the lock is needed
    ],
    ids=lambda a: a[0],
)
def test_writing_on_a_read_only_disk_ends_in_one_line(
    read_only_project, all_up_to_date, snapshot, capsys, argv
):
    project = read_only_project()
    before = snapshot(project)
    assert cli.main(["--root", str(project), *argv]) == 1
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {project}/reports/demo/")
    assert line.endswith(
        ": read-only file system (EROFS); the file system is read-only: work in a writable "
        "copy, or remount it read-write"
    )
    assert snapshot(project) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "scan.png", "--model", "m.keras", "--out"],
        ["export", "--profile", "demo", "--out"],
    ],
    ids=lambda a: a[0],
)
def test_an_output_folder_below_a_file_ends_in_one_line(tmp_path, snapshot, capsys, argv):
    project = _project(tmp_path / "repo")
    (tmp_path / "a-file").write_text("not a folder")
    before = snapshot(tmp_path)
    assert cli.main(["--root", str(project), *argv, str(tmp_path / "a-file" / "out")]) == 1
    assert _one_error_line(capsys) == (
        f"error: {tmp_path}/a-file: not a directory (ENOTDIR); a part of that path is a file, "
        "not a folder: choose another path"
    )
    assert snapshot(tmp_path) == before


def test_os_errors_read_as_path_meaning_and_remedy():
    full = OSError(errno.ENOSPC, "No space left on device", "reports/demo/model.keras")
    assert cli.os_error_line(full) == (
        "reports/demo/model.keras: no space left on device (ENOSPC); the disk is full: free some "
        "space"
    )
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")
    assert cli.os_error_line(moved) == "a -> b: invalid cross-device link (EXDEV)"
    assert cli.os_error_line(OSError("no errno\nat all")) == "no errno at all"


# --- make's variables ----------------------------------------------------------------------------


@pytest.fixture()
def make_project(tmp_path, project_root) -> Path:
    """A copy of the Makefile, src/ and params/: enough for `make clean` and `make -n`."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    project = tmp_path / "my project"  # a space in the project's own path too
    project.mkdir()
    shutil.copy2(project_root / "Makefile", project / "Makefile")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(project_root / "src" / "brainmri", project / "src" / "brainmri", ignore=ignore)
    shutil.copytree(project_root / "params", project / "params")
    return project


def _make(project: Path, *args: str) -> subprocess.CompletedProcess:
    """make in the copy with this interpreter and no set-up; no .pyc files, so no new files."""
    argv = ["make", "--no-print-directory", *args, f"VENV={sys.prefix}", "SKIP_SETUP=1"]
    argv.append(f"BOOT_PYTHON={sys.executable}")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    ("target", "variables", "command", "expected"),
    [
        ("all", ["DATA_DIR=/data/my scans"], "choose", ["--data-dir", "/data/my scans"]),
        ("all", ["MASK_DIR=/m m", "UNTIL=03_train"], "run", ["--mask-dir", "/m m", "--until"]),
        ("predict", ['IMAGES=scan "1".png', "OUT=out dir"], "predict", ['scan "1".png']),
        ("predict", ["IMAGES=x", "OUT=out dir"], "predict", ["--out", "out dir"]),
        ("export", ["OUT=my model"], "export", ["--out", "my model"]),
        ("serve", ["PROFILE=a b", "PORT=8 1"], "serve", ["--profile", "a b", "--port", "8 1"]),
        ("html", ["PROFILE=it's"], "html", ["--profile", "it's"]),
        ("clean", ["PROFILE=a b"], "clean", ["--profile", "a b"]),
        ("compare", ["A=a b", "B=it's"], "compare", ["compare", "a b", "it's"]),
    ],
)
def test_make_passes_each_value_as_one_word(
    make_project, snapshot, target, variables, command, expected
):
    before = snapshot(make_project.parent)
    result = _make(make_project, "-n", target, *variables)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if f"brainmri.cli {command}" in line)
    words = shlex.split(line)
    at = words.index(expected[0])
    assert words[at : at + len(expected)] == expected, line
    assert snapshot(make_project.parent) == before


@pytest.mark.parametrize(
    "profile",
    [
        "demo; echo X > injected",
        "$(shell touch injected)",
        "`touch injected`",
        "demo' 'x",
        '"demo"',
        "../x",
    ],
)
def test_make_clean_runs_nothing_from_a_profile_and_refuses_it(make_project, snapshot, profile):
    (make_project / "reports" / "demo").mkdir(parents=True)
    before = snapshot(make_project.parent)
    result = _make(make_project, "clean", f"PROFILE={profile}")
    assert result.returncode != 0
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: profile ") and "is not a profile name" in first, first
    assert snapshot(make_project.parent) == before  # no "injected", reports/demo kept


def test_make_keeps_the_makefiles_own_defaults():
    """The quoting must not blank a default: make test runs pytest with 2 workers."""
    root = Path(__file__).parents[1]
    result = subprocess.run(
        ["make", "-n", "-C", str(root), "test", "test-fast", "SKIP_SETUP=1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    runs = [shlex.split(line) for line in result.stdout.splitlines() if "-m pytest" in line]
    assert len(runs) == 2 and all(words[words.index("-n") + 1] == "2" for words in runs)


def test_make_clean_still_removes_a_plain_profile(make_project):
    (make_project / "reports" / "demo").mkdir(parents=True)
    result = _make(make_project, "clean")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"removed {make_project}/reports/demo"


def test_a_quoted_home_folder_is_still_expanded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["--root", str(tmp_path), "choose", "--data-dir", "~/nowhere"]) == 2
    assert _one_error_line(capsys).startswith(f"error: DATA_DIR={tmp_path}/nowhere: no Training/")
