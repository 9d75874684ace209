"""Speed benchmarks (`make bench`): throughput targets live here, never in the unit tests.

Targets on the reference machine (2 CPU cores, no GPU) are asserted loosely so a regression of
several times fails, while normal noise does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from brainmri import evaluation, explain, inputs
from brainmri import model as mdl
from brainmri.config import load_profile
from brainmri.phantom import generate_phantom_dataset


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return generate_phantom_dataset(tmp_path_factory.mktemp("bench"), 50, 10, 128, seed=1)


@pytest.fixture(scope="module")
def demo_model():
    params = load_profile("demo")["model"]
    return mdl.build_model(params), params["image_size"]


def test_phantom_generation_speed(benchmark, tmp_path):
    """1,000 phantom images at 128 px in well under 30 s."""
    counter = iter(range(1000))
    result = benchmark.pedantic(
        lambda: generate_phantom_dataset(tmp_path / f"set{next(counter)}", 200, 50, 128, seed=0),
        rounds=1,
        iterations=1,
    )
    assert (result / "phantom.json").is_file()
    assert benchmark.stats.stats.max < 30


def test_input_pipeline_throughput(benchmark, phantoms):
    """Decoding, caching and batching: one cached epoch of 200 images in under 2 s."""
    files = sorted((phantoms / "Training").glob("*/*.jpg"))
    ds = inputs.make_dataset(files, [0] * len(files), 96, 32, cache="memory")
    for _ in ds:  # fill the cache
        pass
    benchmark(lambda: sum(1 for _ in ds))
    assert benchmark.stats.stats.median < 2.0


def test_gradcam_batch_speed(benchmark, demo_model):
    """Grad-CAM of 64 images at 96 px on the demo model in under 2 s once traced."""
    model, size = demo_model
    images = np.random.default_rng(0).uniform(0, 255, (64, size, size, 3)).astype("float32")
    explain.gradcam(model, images[:2])  # trace once
    maps = benchmark(lambda: explain.gradcam(model, images))
    assert maps.shape == (64, size, size)
    assert benchmark.stats.stats.median < 2.0


def test_bootstrap_speed(benchmark):
    """10,000 bootstrap resamples of 1,311 test cases in under 3 s."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 1311)
    pred = np.where(rng.random(1311) < 0.95, y, rng.integers(0, 4, 1311))
    ci = benchmark(lambda: evaluation.bootstrap_ci(y, pred, 10_000, seed=0))
    assert ci["accuracy"]["low"] < ci["accuracy"]["point"] < ci["accuracy"]["high"]
    assert benchmark.stats.stats.median < 3.0


def test_predict_throughput_with_and_without_overlays(benchmark, phantoms, demo_model, tmp_path):
    """`brainmri predict` on 40 phantom scans, with and without the Grad-CAM views.

    Measured here (2 cores, demo model at 128 px): 42 images/s without views, 2.5 with them; the
    view (a Grad-CAM pass and a four-panel figure per image) dominates. The bound only catches a
    collapse of the overlay path.
    """
    import time

    from brainmri import predict, runs

    model, _ = demo_model
    files = sorted((phantoms / "Testing").glob("*/*.jpg"))
    info = runs.RunInfo(tmp_path / "model.keras", "0" * 64)
    seconds = {}
    for overlays in (False, True):
        start = time.perf_counter()
        predict.predict_scans(
            files, model, info, tmp_path / f"run-{overlays}", overlays=overlays, echo=lambda _: None
        )
        seconds[overlays] = time.perf_counter() - start
    benchmark.extra_info.update(
        {f"images_per_s_overlays_{k}": round(len(files) / v, 1) for k, v in seconds.items()}
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert len(files) / seconds[True] > 1.0  # images per second with views


def test_serve_start_up_time(benchmark, demo_model, tmp_path):
    """`brainmri serve` from the command to the printed address (model loaded and traced) on a
    demo-sized model (the demo profile's CNN at 128 px, in a project's reports/demo/): the goal
    is under 20 s after set-up; the bound only catches a collapse. The process is then stopped
    with Ctrl-C (SIGINT), as a user would."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    model, _ = demo_model
    root = tmp_path / "repo"
    (root / "params").mkdir(parents=True)
    (root / "params" / "default.yaml").touch()
    (root / "reports" / "demo").mkdir(parents=True)
    model.save(root / "reports" / "demo" / "model.keras")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    argv = [sys.executable, "-m", "brainmri.cli", "--root", str(root), "serve", "--port", "0"]
    seconds = []

    def start_and_stop() -> None:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        try:
            for line in proc.stdout:
                if re.search(r"at http://127\.0\.0\.1:\d+/", line):
                    seconds.append(time.perf_counter() - start)
                    break
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
        assert proc.returncode == 0 and seconds

    benchmark.pedantic(start_and_stop, rounds=2, iterations=1)
    benchmark.extra_info["seconds_to_ready"] = [round(s, 1) for s in seconds]
    assert max(seconds) < 60


def test_explorer_explanation_speed(benchmark):
    """The explorer (brainmri.explore) on the latest finished run of the project (BRAINMRI_ROOT
    picks another project): opening it, then one new image selected and explained by each method.

    Goal: an explanation of one image in under 3 s on 2 cores for the `cpu` model, once each
    method's steps are traced (the first explanation of a method or layer also traces it;
    BRAINMRI_BENCH_WARM_UP=1 first calls ``Explorer.warm_up`` as the notebook does).
    Measured on a copy of the `cpu` run (docs/benchmarks.md).
    """
    import os
    import time

    from brainmri import config
    from brainmri.explore import Explorer, finished_runs
    from brainmri.explore.widgets import METHOD_NAMES

    root = config.find_root()
    found = finished_runs(root)
    if not found:
        pytest.skip(f"no finished run under {root / 'reports'} (make all PROFILE=demo)")
    start = time.perf_counter()
    explorer = Explorer.open(found[0], root=root)
    seconds: dict[str, float] = {"open": time.perf_counter() - start}
    if os.environ.get("BRAINMRI_BENCH_WARM_UP") == "1":  # as the notebook does
        start = time.perf_counter()
        explorer.warm_up()
        seconds["warm_up"] = time.perf_counter() - start
    rows = iter(explorer.filter(subset="test").index)

    def explain_new(method: str) -> float:
        start = time.perf_counter()
        explorer.explain(explorer.select(int(next(rows))), method=method)
        return time.perf_counter() - start

    for method in METHOD_NAMES:
        seconds[f"{method}_first"] = explain_new(method)  # traces the method's steps
        seconds[f"{method}_median"] = float(np.median([explain_new(method) for _ in range(5)]))
    for layer in explorer.layers()[1:]:
        start = time.perf_counter()
        explorer.explain(explorer.select(int(next(rows))), layer=layer)
        seconds[f"gradcam_{layer}_first"] = time.perf_counter() - start
    benchmark.extra_info.update(
        {"run": found[0], "images": len(explorer.table), "image_size": explorer.size}
    )
    benchmark.extra_info.update({k: round(v, 3) for k, v in seconds.items()})
    print("\n".join(f"{k}: {v:.2f} s" for k, v in seconds.items()))
    benchmark.pedantic(lambda: explain_new("gradcam"), rounds=3, iterations=1)
    assert all(seconds[f"{m}_median"] < 3.0 for m in METHOD_NAMES), seconds
