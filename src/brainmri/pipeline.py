"""The incremental notebook pipeline: stage keys, papermill runs, failure handling, metrics merge."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from brainmri import devices, reports
from brainmri.config import (
    PIPELINE,
    STAGES,
    WORKER_STAGES,
    ParamError,
    Paths,
    get_stage,
    load_profile,
    stage_params,
)
from brainmri.io import atomic_write, read_json, write_json
from brainmri.lock import profile_lock

KERNEL_NAME = "brainmri"


class StageFailed(RuntimeError):
    """A notebook raised; the message names the stage, the cell and the kept partial notebook."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_hash(root: Path) -> str:
    """Hash of the package's source code: any change to src/ reruns every stage."""
    digest = hashlib.sha256()
    for path in sorted((root / "src" / "brainmri").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def notebook_hash(path: Path) -> str:
    """Hash of a notebook's cells (outputs, metadata and the parameters cell's values ignored).

    Saving a notebook in JupyterLab changes its outputs and metadata, not what the stage does;
    the parameters cell is ignored because papermill injects the profile's values anyway.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [
        [cell.cell_type, cell.source]
        for cell in nb.cells
        if "parameters" not in cell.get("metadata", {}).get("tags", [])
    ]
    return _sha256(json.dumps(cells).encode())


def stage_key(stage: str, params: Mapping[str, Any], paths: Paths, src: str) -> str:
    """A stage's key: its notebook, its parameters, src/ and the records of its upstream runs.

    An upstream record changes whenever that stage runs again, so its artefacts are new and
    every stage downstream of it runs again too.
    """
    upstream = []
    for name in get_stage(stage).upstream:
        stamp = stamp_path(paths, name)
        upstream.append(stamp.read_text() if stamp.is_file() else "")
    payload = {
        "notebook": notebook_hash(paths.notebook(stage)),
        "params": stage_params(params, stage),
        "src": src,
        "upstream": upstream,
    }
    return _sha256(json.dumps(payload, sort_keys=True, default=str).encode())


def stamp_path(paths: Paths, stage: str) -> Path:
    """Where a stage records the key it last completed with."""
    return paths.state_dir / f"{stage}.done.json"


def stage_outputs(paths: Paths, stage: str) -> list[Path]:
    """What a stage publishes: its executed notebook, metrics fragment and declared outputs."""
    outputs = [paths.executed(stage), paths.stage_metrics(stage)]
    return outputs + [getattr(paths, name) for name in get_stage(stage).outputs]


def output_hashes(paths: Paths, stage: str) -> dict[str, str | None]:
    """SHA-256 of each output of a stage, keyed by its path in the project; None if unreadable."""
    hashes: dict[str, str | None] = {}
    for path in stage_outputs(paths, stage):
        try:
            hashes[path.relative_to(paths.root).as_posix()] = _sha256(path.read_bytes())
        except OSError:
            hashes[path.relative_to(paths.root).as_posix()] = None
    return hashes


def is_up_to_date(paths: Paths, stage: str, key: str) -> bool:
    """True when the stage completed with this key and its outputs are those it published.

    Every output's hash is recorded when the stage succeeds; a missing, unreadable or changed
    output (a corrupted model.keras, a hand-edited notebook) makes the stage out of date.
    """
    try:
        stamp = read_json(stamp_path(paths, stage))
    except (FileNotFoundError, ValueError):
        return False
    if not isinstance(stamp, dict) or stamp.get("key") != key:
        return False
    current = output_hashes(paths, stage)
    return None not in current.values() and stamp.get("outputs") == current


def _kernel_manager_logging_to(log: Path) -> type:
    """A kernel manager whose kernel process writes its own stderr to log, not to the console.

    What a notebook prints, warnings included, reaches the executed notebook through Jupyter's
    messages either way. The kernel process's own stderr carries TensorFlow's C++ start-up
    lines, ipykernel's transport warning and, when a run is interrupted, the kernel's ZMQ
    tracebacks: a per-stage log file (reports/<profile>/.state/<stage>.kernel.log) keeps them
    for whoever needs them, and the console shows one line per event.
    """
    from jupyter_client import AsyncKernelManager

    class StageKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw):
            cmd, kw = await super()._async_pre_start_kernel(**kw)
            with open(log, "ab") as handle:  # the kernel process inherits its own copy
                self._stage_stderr = kw["stderr"] = os.dup(handle.fileno())
            return cmd, kw

        async def _async_post_start_kernel(self, **kw):
            await super()._async_post_start_kernel(**kw)
            os.close(self._stage_stderr)  # the kernel holds its own; ours is not needed

    return StageKernelManager


@contextlib.contextmanager
def _library_logs_to(log: Path) -> Iterator[None]:
    """Send papermill's, nbclient's and asyncio's log records to the stage's log, not the console.

    The console shows the notebook's own output and one line per outcome; e.g. nbclient's
    "Kernel died while waiting for execute reply" after a Ctrl-C belongs in the log.
    """
    handler = logging.FileHandler(log, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("papermill", "nbclient", "traitlets", "asyncio")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers, lg.propagate = [handler], False
    try:
        yield
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved, strict=True):
            lg.handlers, lg.propagate = handlers, propagate
        handler.close()


def _execute(stage: str, params: Mapping[str, Any], paths: Paths, log_output: bool) -> None:
    """Run one notebook with papermill; on success move it into place, else keep it in failed/."""
    import papermill as pm

    paths.state_dir.mkdir(parents=True, exist_ok=True)
    running = paths.state_dir / f"{stage}.running.ipynb"
    injected = {"profile": paths.profile, **stage_params(params, stage)}
    env_src = str(paths.root / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [env_src, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    os.environ["BRAINMRI_ROOT"] = str(paths.root)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _library_logs_to(paths.state_dir / f"{stage}.kernel.log"):
            pm.execute_notebook(
                str(paths.notebook(stage)),
                str(running),
                parameters=injected,
                kernel_name=KERNEL_NAME,
                cwd=str(paths.notebooks_dir),
                log_output=False,
                # Stream the notebook's printed output (one line per training epoch) to the console;
                # its stderr (library warnings) stays in the executed notebook.
                stdout_file=sys.stdout if log_output else None,
                progress_bar=False,
                report_mode=False,
                kernel_manager_class=_kernel_manager_logging_to(
                    paths.state_dir / f"{stage}.kernel.log"
                ),
            )
    except (Exception, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            # The interrupted kernel's tasks are collected later, when asyncio would print
            # "Task exception was never retrieved" with a traceback: the run is over, and
            # Ctrl-C gets one line.
            logging.getLogger("asyncio").disabled = True
        paths.failed_dir.mkdir(parents=True, exist_ok=True)
        kept = paths.failed_dir / f"{stage}.ipynb"
        if running.exists():
            with contextlib.suppress(Exception):  # a half-written notebook is kept as it is
                reports.clean_notebook_outputs(running)
            shutil.move(str(running), kept)
        what = (
            "was interrupted (Ctrl-C)"
            if isinstance(exc, KeyboardInterrupt)
            else f"failed: {_papermill_error_summary(exc)}"
        )
        raise StageFailed(
            f"stage {stage} {what}\npartly executed notebook kept at {kept.relative_to(paths.root)}"
        ) from None
    reports.clean_notebook_outputs(running)
    os.replace(running, paths.executed(stage))
    (paths.failed_dir / f"{stage}.ipynb").unlink(missing_ok=True)


def _papermill_error_summary(exc: Exception) -> str:
    """papermill's error summary: the cell and the exception, without the long traceback."""
    ename = getattr(exc, "ename", None)
    if ename:
        cell = getattr(exc, "exec_count", None)
        return f"cell [{cell}] raised {ename}: {getattr(exc, 'evalue', '')}"
    return f"{exc.__class__.__name__}: {exc}"


def stage_seconds(paths: Paths) -> dict[str, float]:
    """Wall time of each stage's last completed run, in seconds (from the stage stamps)."""
    return {stage: run["seconds"] for stage, run in stage_runs(paths).items()}


def stage_runs(paths: Paths) -> dict[str, dict[str, Any]]:
    """Each stage's last completed run: its wall time in seconds and when it finished (UTC).

    A stage that was up to date keeps the time of the run that produced its outputs, so the
    stages of one report can come from different runs; the finishing times say which.
    """
    runs = {}
    for stage in STAGES:
        try:
            stamp = read_json(stamp_path(paths, stage))
            seconds = float(stamp["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not completed (or an unreadable stamp): no time to report
        finished = stamp.get("finished")
        when = (
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(finished))
            if isinstance(finished, int | float)
            else None
        )
        runs[stage] = {"seconds": seconds, "finished_utc": when}
    return runs


def merge_metrics(paths: Paths, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the stages' metric fragments into metrics.json (written atomically)."""
    merged: dict[str, Any] = dict(extra)
    for stage in PIPELINE:
        fragment = paths.stage_metrics(stage.name)
        if fragment.is_file():
            merged[stage.metrics_key] = read_json(fragment)
    write_json(paths.metrics, merged)
    return merged


def run_pipeline(
    profile: str,
    root: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
    until: str | None = None,
    log_output: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Validate the profile, run the stages that are out of date, then publish HTML and index.

    Args:
        profile: the profile's name (``params/<profile>.yaml``).
        root: the project folder.
        overrides: parameter values that replace the profile's (``data_dir``, ``mask_dir``).
        force: rerun every stage, up to date or not.
        until: the last stage to run; the later ones are left as they are. ``"03_train"`` is
            how to study a setting on the validation split without reading Testing, which only
            04_evaluate and 05_gradcam read.
        log_output: stream each notebook's output.
        echo: where progress lines go.

    Returns:
        ``{"ran": stages run, "seconds": their wall times}``.

    Raises:
        ParamError: the profile is invalid (before any work).
        ProfileBusy: another process runs this profile.
        LinkedRunDir: reports/<profile> is a symbolic link (nothing is written through it).
        StageFailed: a stage raised or was interrupted; what finished is published.
    """
    if until is not None and until not in STAGES:
        raise ParamError(f"until = {until!r}: expected one of the stages {', '.join(STAGES)}")
    paths = Paths(root=root, profile=profile)
    params = load_profile(profile, root=root, overrides=overrides)  # validates before any work
    with contextlib.ExitStack() as held:
        lock = _LockOnFirstWrite(paths, held)
        return _run_stages(
            paths, params, lock, force=force, until=until, log_output=log_output, echo=echo
        )


class _LockOnFirstWrite:
    """The profile's lock, taken just before the run's first write rather than at its start.

    With every stage up to date and the pages published a run writes nothing, so it does not
    open reports/<profile>/.lock for writing either: a finished run on a read-only disk (or a
    read-only copy of one) answers "nothing to do" instead of failing on the lock file.
    """

    def __init__(self, paths: Paths, stack: contextlib.ExitStack) -> None:
        self.paths, self.stack, self.held = paths, stack, False

    def __call__(self) -> bool:
        """Hold the lock from now until the run ends; True when this call took it.

        Raises:
            ProfileBusy: another process runs or cleans the profile.
            LinkedRunDir: reports/<profile> is a symbolic link.
        """
        if self.held:
            return False
        self.stack.enter_context(profile_lock(self.paths))
        self.held = True
        return True


def _run_stages(
    paths: Paths,
    params: Mapping[str, Any],
    lock: Callable[[], bool],
    *,
    force: bool,
    until: str | None,
    log_output: bool,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """The body of :func:`run_pipeline`; lock() takes the profile's lock before any write."""
    root, profile = paths.root, paths.profile
    src = source_hash(paths.root)
    ran: list[str] = []
    timings: dict[str, float] = {}
    failed: str | None = None
    stages = STAGES
    if params["train"]["distribute"] == "multi_worker" and not devices.is_chief():
        stages = WORKER_STAGES
        echo(
            f"{devices.task_name()} of a cluster: running {', '.join(stages)}; the chief does the rest"
        )
    if until is not None and until in stages:
        last = STAGES.index(until)
        left = [stage for stage in stages if STAGES.index(stage) > last]
        stages = tuple(stage for stage in stages if STAGES.index(stage) <= last)
        if left:
            echo(f"until {until}: {', '.join(left)} not run")
    try:
        for stage in stages:
            key = stage_key(stage, params, paths, src)
            up_to_date = not force and is_up_to_date(paths, stage, key)
            if not up_to_date and lock():  # just locked: another run may have finished it since
                key = stage_key(stage, params, paths, src)
                up_to_date = not force and is_up_to_date(paths, stage, key)
            if up_to_date:
                echo(f"[{stage}] up to date")
                continue
            stamp_path(paths, stage).unlink(missing_ok=True)
            target = paths.executed(stage).relative_to(root)
            echo(f"[{stage}] running notebooks/{stage}.ipynb -> {target}")
            start = time.perf_counter()
            failed = stage
            _execute(stage, params, paths, log_output)
            failed = None
            timings[stage] = round(time.perf_counter() - start, 1)
            write_json(
                stamp_path(paths, stage),
                {
                    "key": key,
                    "seconds": timings[stage],
                    "finished": time.time(),
                    "outputs": output_hashes(paths, stage),
                },
            )
            ran.append(stage)
            echo(f"[{stage}] done in {timings[stage]:.1f} s")
    finally:
        # Publish what finished, and the failure, even when a stage raised.
        if ran or failed or not paths.index_html.is_file():
            lock()  # held already when a stage ran; taken here when only the pages are missing
            if ran and paths.metrics.is_file():  # what the index compares this run with
                atomic_write(paths.previous_metrics, paths.metrics.read_bytes())
            extra = {
                "profile": profile,
                "params": params,
                "stage_seconds": stage_seconds(paths),
                "stage_runs": stage_runs(paths),
            }
            if failed and paths.metrics.is_file():
                # The results on disk are the last successful runs': keep their parameters,
                # not the failed run's, and say which stage failed.
                extra["params"] = read_json(paths.metrics).get("params", params)
            if failed:
                extra["failed_stage"] = failed
            merge_metrics(paths, extra)
            reports.export_html(paths, ran)
            reports.write_model_card(paths)
            reports.write_index(paths)
    if not ran:
        echo(f"nothing to do: all {len(stages)} stages of profile '{profile}' are up to date")
    echo(f"report: {paths.index_html.relative_to(root)}")
    return {"ran": ran, "seconds": timings}
