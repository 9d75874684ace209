"""benchmarks/ratios.py (`make bench`): the ratios are written, printed and refused when asked
wrongly. Only the quick input part runs here; the timings themselves belong to `make bench`."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def ratios(load_script):
    return load_script("benchmarks/ratios.py")


def test_the_input_part_writes_its_ratio_and_prints_the_table(ratios, tmp_path, capsys):
    out = tmp_path / "bench" / "bench.json"
    argv = ["--parts", "input", "--per-class", "4", "--out", str(out)]
    assert ratios.main(argv) == 0
    results = json.loads(out.read_text())
    step = results["input_pipeline"]
    assert step["images"] == 16
    for key in ("project_first_epoch", "project_cached_epoch", "reference_imagedatagenerator"):
        assert step[key] > 0
    assert step["ratio_cached"] == pytest.approx(
        step["project_cached_epoch"] / step["reference_imagedatagenerator"]
    )
    assert "training_step" not in results and "thread_settings" not in results  # not asked for
    assert results["command"] == "benchmarks/ratios.py " + " ".join(argv)
    assert results["threads"] == "0,0" and results["machine"]["cpus"] >= 1
    printed = capsys.readouterr().out
    assert "input pipeline, cached epoch" in printed and f"written: {out}" in printed


def test_the_table_shows_every_part_measured(ratios):
    results = {
        "data": "phantom set",
        "machine": {"cpus": 2, "load_average_1min": 0.5},
        "training_step": {
            "project_no_xla": 4.4,
            "reference_no_xla": 4.0,
            "ratio_no_xla": 1.1,
            "goal": ">= 1.2x",
        },
        "thread_settings": {"2,1": {"project": 4.5, "reference": 4.1, "ratio": 1.0976}},
        "inference": {"b1_240_predict": 6.2},
    }
    text = ratios.table(results)
    assert "B1 training step without XLA (img/s)" in text and "1.10x" in text
    assert "with XLA" not in text  # not measured, not shown
    assert "threads intra,inter = 2,1" in text and "1.10x" in text.splitlines()[-2]
    assert "b1_240_predict" in text and "load 0.5 on 2 CPUs" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--parts", "input,speed"], "--parts: unknown ['speed']"),
        (["--threads", "two"], "--threads 'two': expected INTRA,INTER"),
        (["--xla", "sometimes"], "invalid choice: 'sometimes'"),
    ],
)
def test_bad_arguments_are_refused_with_what_was_expected(ratios, argv, message, capsys):
    with pytest.raises(SystemExit):
        ratios.main(argv)
    assert message in capsys.readouterr().err
