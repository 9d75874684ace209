"""Command line: choose a profile, run the pipeline, re-render reports, predict, serve, clean,
compare, open JupyterLab."""

# Only the standard library is imported at module level: `make all` calls `choose` with the
# system Python before the environment exists, so its first output line can name the profile.
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainmri.choice import choice_line, choose_profile
from brainmri.errors import os_error_line


def _root(args: argparse.Namespace) -> Path:
    """The folder a command works in: --root, else the working directory.

    For a command that writes or deletes, :func:`main` has already replaced --root with the
    project's folder (:func:`_project_root`), or stopped.
    """
    return Path(args.root).resolve() if args.root else Path.cwd().resolve()


def _project_root(given: str | None) -> Path:
    """The project a command that writes or deletes works in; a folder that is not one stops it.

    Taking the working directory as it is let `brainmri clean --profile notes`, run in a folder
    that was not a checkout, remove that folder's ./reports/notes.

    Args:
        given: the --root argument, or None to look from the working directory up
            (:func:`brainmri.config.find_root`, which honours BRAINMRI_ROOT).

    Returns:
        The resolved project folder (one holding params/default.yaml).

    Raises:
        NotAProject: the folder (or none from the working directory up) is a project.
    """
    from brainmri.config import find_root, project_root_at

    if given is None:
        return find_root()
    return project_root_at(given, named=f"--root {given}", remedy="give the project's folder")


def _writes_in_project(args: argparse.Namespace) -> bool:
    """True when the command writes or deletes in the project (all but choose and compare);
    serve, which only reads, finds its project the same way."""
    if args.command == "predict":  # with its own model and output folder it needs no project
        return not (args.model and args.out)
    return args.command not in ("choose", "compare")


def _check_new_folder(path: Path) -> None:
    """Refuse, before any work, an output folder that cannot be made: one below a file.

    Raises:
        NotADirectoryError: a part of the path above it is a file (errno ENOTDIR).
    """
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and existing != path and not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))


def cmd_choose(args: argparse.Namespace) -> int:
    """Print the profile `make all` will run and why."""
    profile, reason = choose_profile(_root(args), args.profile, args.data_dir)
    print(choice_line(profile, reason))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline for one profile."""
    from brainmri.config import ParamError
    from brainmri.lock import ProfileUnavailable
    from brainmri.pipeline import StageFailed, run_pipeline

    root = _root(args)
    profile, _ = choose_profile(root, args.profile, args.data_dir)
    overrides = {"data_dir": str(Path(args.data_dir).resolve())} if args.data_dir else {}
    if args.mask_dir:
        if not Path(args.mask_dir).is_dir():
            print(f"error: MASK_DIR={args.mask_dir}: no such folder", file=sys.stderr)
            return 1
        overrides["mask_dir"] = str(Path(args.mask_dir).resolve())
    try:
        if args.data_dir:
            _check_data_dir_is_used(root, profile, args.data_dir)
        run_pipeline(
            profile,
            root,
            overrides,
            force=args.force,
            until=args.until,
            log_output=not args.quiet,
        )
    except (ParamError, StageFailed, ProfileUnavailable, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130 if "interrupted" in str(exc) else 1
    return 0


def _check_data_dir_is_used(root: Path, profile: str, data_dir: str) -> None:
    """Refuse a DATA_DIR that the profile would ignore (its data_source reads no data_dir)."""
    from brainmri.config import ParamError, load_profile

    source = load_profile(profile, root=root)["data"]["data_source"]
    if source not in ("auto", "data_dir"):
        raise ParamError(
            f"DATA_DIR={data_dir} would be ignored: profile '{profile}' reads data_source: "
            f"{source} (params/{profile}.yaml); drop DATA_DIR, or pick a profile that reads "
            "real data (cpu, default)"
        )


def _existing_run(args: argparse.Namespace, needed: Callable[[Any], Path]) -> Any:
    """The run's paths when what the command needs exists and its folder may be written (never
    through a link); else None, the reason printed in one line."""
    from brainmri.config import Paths
    from brainmri.lock import writable_run_dir

    paths = Paths(_root(args), args.profile)
    writable_run_dir(paths)
    if not needed(paths).exists():
        print(f"error: {needed(paths)} does not exist; run `make all PROFILE={args.profile}`")
        return None
    return paths


def cmd_html(args: argparse.Namespace) -> int:
    """Re-render the HTML reports and index of a profile's executed notebooks."""
    from brainmri import reports

    paths = _existing_run(args, lambda p: p.run_dir)  # the pages are written there
    if paths is None:
        return 1
    written = reports.export_html(paths, hide_code=not args.show_code)
    reports.write_model_card(paths)
    reports.write_index(paths)
    print(f"rendered {len(written)} notebooks; open {paths.index_html}")
    return 0


def cmd_screenshots(args: argparse.Namespace) -> int:
    """Check a profile's HTML reports in headless Chromium (offline) and save screenshots."""
    from brainmri.reports import browser

    paths = _existing_run(args, lambda p: p.index_html)  # the screenshots are written there
    if paths is None:
        return 1
    try:
        checks = browser.check_reports(paths)
    except browser.BrowserMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for check in checks:
        problems = [f"broken image {name}" for name in check.broken_images]
        problems += [f"network request {url}" for url in check.requests]
        problems += [f"console error {text}" for text in check.console_errors]
        status = "ok" if check.ok else "; ".join(problems)
        print(f"{check.page}: {len(check.images)} images, {status}")
    print(f"screenshots: {paths.screenshots_dir}")
    return 0 if all(check.ok for check in checks) else 1


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ log (the cuInit probe of a machine without a GPU) off the console
    of predict and export; it must be set before TensorFlow is imported. Their errors reach
    the user as Python exceptions; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows the log."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict new scans (JPEG, PNG, BMP, TIFF, DICOM) with a trained model."""
    _quiet_tensorflow()
    from brainmri.config import Paths

    root = _root(args)
    paths = Paths(root, args.profile)
    out = Path(args.out) if args.out else root / "predictions"
    _check_new_folder(out)  # before the model loads: a bad --out fails in a second, not twenty
    from brainmri import predict, runs  # TensorFlow
    from brainmri.data import scans
    from brainmri.model import load_model

    model_path = Path(args.model) if args.model else paths.model
    try:
        files = scans.find_scans(args.images)
        model = load_model(model_path)  # Keras safe mode: a model carrying code is refused
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info = runs.run_info(
        model_path, None if args.model else paths.run_dir, crop_to_brain=args.crop_to_brain
    )
    for warning in info.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        if not args.out:  # a unique new folder: concurrent runs never share one
            out = predict.new_output_folder(out, args.profile)
        table = predict.predict_scans(files, model, info, out, overlays=not args.no_overlays)
    except predict.Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130
    except OSError as exc:  # FileExistsError, read-only, a file in the path, disk full
        print(f"error: {os_error_line(exc, out)}", file=sys.stderr)
        return 1
    counts = table[table["status"] == "ok"]["predicted"].value_counts().to_dict()
    print(f"predicted: {counts}; skipped: {int((table['status'] != 'ok').sum())}")
    print(f"report: {out / 'index.html'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a profile's model as a TensorFlow SavedModel taking whole uint8 scans."""
    _quiet_tensorflow()
    from brainmri.config import Paths
    from brainmri.lock import writable_run_dir

    paths = Paths(_root(args), args.profile)
    target = Path(args.out) if args.out else writable_run_dir(paths) / "savedmodel"
    _check_new_folder(target)
    from brainmri import predict, runs  # TensorFlow: after the checks that need none
    from brainmri.model import load_model

    try:
        crop = runs.crop_to_brain_of(paths.run_dir)
        predict.export_savedmodel(load_model(paths.model), target, crop_to_brain=crop)
    except OSError as exc:  # FileNotFoundError, FileExistsError, read-only, a file in the path
        print(f"error: {os_error_line(exc, target)}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cut = "cut to the head square, " if crop else ""
    print(
        f"SavedModel (signature 'serve': whole uint8 RGB scans -> {cut}resized -> "
        f"probabilities; 'serve_prepared': uint8 images at the input size): {target}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Use a profile's model in a local web page (127.0.0.1 only): upload scans, see results."""
    _quiet_tensorflow()
    from brainmri.config import Paths

    paths = Paths(_root(args), args.profile)
    if not 0 <= args.port <= 65535:
        print(f"error: PORT={args.port}: expected 0 to 65535 (0: any free port)", file=sys.stderr)
        return 2
    if args.max_upload_mb < 1:
        print(f"error: --max-upload-mb {args.max_upload_mb}: expected at least 1", file=sys.stderr)
        return 2
    if not paths.model.is_file():  # before TensorFlow loads: a missing run fails at once
        print(
            f"error: {paths.model} does not exist; train it first with "
            f"`make all PROFILE={args.profile}`",
            file=sys.stderr,
        )
        return 1
    print(f"loading {paths.model} ...", flush=True)
    from brainmri import app, runs  # TensorFlow
    from brainmri.model import load_model

    try:
        model = load_model(paths.model)  # Keras safe mode: a model carrying code is refused
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info = runs.run_info(paths.model, paths.run_dir, crop_to_brain=args.crop_to_brain)
    for warning in info.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    service = app.Service(model, info, profile=args.profile)
    return app.serve(
        service,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        echo=lambda line: print(line, flush=True),
    )


def cmd_clean(args: argparse.Namespace) -> int:
    """Delete one profile's reports (never downloaded data)."""
    from brainmri.config import Paths
    from brainmri.lock import ProfileUnavailable, profile_lock, writable_run_dir

    paths = Paths(_root(args), args.profile)  # refuses a name that is not a plain profile name
    try:
        run_dir = writable_run_dir(paths)  # a link is refused: neither followed nor removed
        if not run_dir.is_dir():
            print(f"nothing to remove: {run_dir} does not exist")
            return 0
        with profile_lock(paths):  # never pull a run's folder from under it
            shutil.rmtree(run_dir)
    except ProfileUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"removed {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the differences of two runs' headline metrics."""
    from brainmri.config import Paths
    from brainmri.reports.tables import compare_runs

    loaded = []
    for name in (args.a, args.b):
        path = Paths(_root(args), name).metrics
        if not path.is_file():
            print(f"error: {path} does not exist; run `make all PROFILE={name}` first")
            return 1
        loaded.append(json.loads(path.read_text()))
    print(compare_runs(loaded[0], loaded[1], args.a, args.b))
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    """Open JupyterLab in notebooks/, on the explorer when a run has finished."""
    from brainmri.explore.lab import lab_command

    argv, line = lab_command(_root(args))
    print(line, flush=True)
    os.execv(argv[0], argv)  # JupyterLab replaces this process: Ctrl-C reaches it alone
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m brainmri.cli`."""
    parser = argparse.ArgumentParser(prog="brainmri", description=__doc__)
    parser.add_argument(
        "--root",
        help="project folder (default: the nearest folder up from here holding "
        "params/default.yaml, or BRAINMRI_ROOT)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("choose", help=cmd_choose.__doc__)
    p.add_argument("--profile", default=None)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_choose)
    p = sub.add_parser("run", help=cmd_run.__doc__)
    p.add_argument("--profile", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--mask-dir", default=None, help="tumour masks (data.mask_dir)")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    p.add_argument(
        "--until",
        default=None,
        metavar="STAGE",
        help="the last stage to run, e.g. 03_train: study a setting on validation, Testing unread",
    )
    p.add_argument("--quiet", action="store_true", help="do not stream notebook output")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("html", help=cmd_html.__doc__)
    p.add_argument("--profile", required=True)
    p.add_argument("--show-code", action="store_true")
    p.set_defaults(func=cmd_html)
    p = sub.add_parser("screenshots", help=cmd_screenshots.__doc__)
    p.add_argument("--profile", required=True)
    p.set_defaults(func=cmd_screenshots)
    p = sub.add_parser("predict", help=cmd_predict.__doc__)
    p.add_argument("images", help="an image or DICOM file, a folder (recursive) or a glob")
    p.add_argument("--profile", default="default", help="use reports/<profile>/model.keras")
    p.add_argument("--model", default=None, help="another model.keras instead")
    p.add_argument(
        "--out",
        default=None,
        help="a new or empty folder (default: a new predictions/<profile>-<time>-<random>)",
    )
    p.add_argument("--no-overlays", action="store_true", help="skip the Grad-CAM views (faster)")
    p.add_argument(
        "--crop-to-brain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut each scan to the head first (default: as the profile's run did; off with "
        "--model, whose run is unknown)",
    )
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help=cmd_export.__doc__)
    p.add_argument("--profile", required=True)
    p.add_argument(
        "--out", default=None, help="the SavedModel folder (default reports/<profile>/savedmodel)"
    )
    p.set_defaults(func=cmd_export)
    from brainmri.config.constants import SERVE_MAX_UPLOAD_MB, SERVE_PORT  # no dependencies

    p = sub.add_parser("serve", help=cmd_serve.__doc__)
    p.add_argument("--profile", default="demo", help="use reports/<profile>/model.keras")
    p.add_argument(
        "--port",
        type=int,
        default=SERVE_PORT,
        help=f"the port on 127.0.0.1 (default {SERVE_PORT}; 0, or a busy one: any free port)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=SERVE_MAX_UPLOAD_MB,
        help=f"the cap on one upload, all files together (default {SERVE_MAX_UPLOAD_MB})",
    )
    p.add_argument(
        "--crop-to-brain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut each scan to the head first (default: as the profile's run did)",
    )
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("clean", help=cmd_clean.__doc__)
    p.add_argument("--profile", required=True)
    p.set_defaults(func=cmd_clean)
    p = sub.add_parser("lab", help=cmd_lab.__doc__)
    p.set_defaults(func=cmd_lab)
    p = sub.add_parser("compare", help=cmd_compare.__doc__)
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: every expected failure ends in one "error:" line and a non-zero status."""
    from brainmri.config import NotAProject, ParamError  # standard library only
    from brainmri.lock import ProfileUnavailable  # standard library only

    args = build_parser().parse_args(argv)
    for name in ("root", "data_dir", "mask_dir", "model", "out"):
        # make passes each value quoted, so no shell expands a "~" in DATA_DIR="~/data" there
        if getattr(args, name, None):
            setattr(args, name, os.path.expanduser(getattr(args, name)))
    try:
        if _writes_in_project(args):
            args.root = str(_project_root(args.root))
        return args.func(args)
    except (ParamError, NotAProject) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProfileUnavailable as exc:  # busy, or reports/<profile> is a link
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # read-only or full disk, no permission, a file for a folder ...
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
