"""brainmri.reports.index and model_card: the answers of a run, from its metrics.json."""

from __future__ import annotations

import re

import numpy as np
import pytest

from brainmri import config, evaluation
from brainmri.config import CLASS_NAMES
from brainmri.io import write_json
from brainmri.reports import index as idx
from brainmri.reports import model_card_markdown, write_index, write_model_card


def _block(n: int, error_rate: float, seed: int) -> dict:
    """A real evaluation block of n cases with about error_rate mistakes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    logits = np.eye(4)[y] * 4 + rng.normal(0, 1, (n, 4))
    wrong = rng.random(n) < error_rate
    logits[wrong] = np.roll(logits[wrong], 1, axis=1)
    probs = evaluation.softmax(logits)
    return evaluation.evaluate_split(
        y, probs, logits, [f"Testing/x/{i}.jpg" for i in range(n)],
        n_resamples=200, seed=0, n_bins=10, temperature=1.2,
    )  # fmt: skip


@pytest.fixture
def metrics() -> dict:
    params = config.load_profile("demo")
    localisation = {
        "glioma": {
            "n_images": 5,
            "mask_area_fraction": 0.02,
            "methods": {
                m: {"pointing_rate": p, "pointing_rate_strict": p, "energy_ratio": 3.0}
                for m, p in (("gradcam", 0.8), ("random", 0.1), ("centre", 0.2))
            },
        }
    }
    return {
        "profile": "demo",
        "params": params,
        "stage_seconds": {"01_download": 12.0, "03_train": 600.0},
        "stage_runs": {  # 03 reused from an earlier run: its own finishing time shows it
            "01_download": {"seconds": 12.0, "finished_utc": "2026-11-30 10:00"},
            "03_train": {"seconds": 600.0, "finished_utc": "2026-11-29 09:00"},
        },
        "data": {"source": "phantom", "detail": "synthetic", "files": 1200},
        "train": {"model": "cnn", "epochs_run": 7, "best": {"epoch": 5, "val_accuracy": 0.97}},
        "evaluate": {"official": _block(400, 0.1, 1), "headline": _block(300, 0.1, 2)},
        "gradcam": {
            "method": "gradcam",
            "localisation": {"classes": localisation},
            "erasure": {
                "glioma": {"n": 5, "drop_lesion": 0.61, "drop_control": 0.04,
                           "changed_lesion": 0.6, "changed_control": 0.0,
                           "lesion_costs_more": 1.0, "no_control": 0},
            },
            "context": {
                "all": {"n": 8, "accuracy_original": 0.9, "accuracy_brain_only": 0.85,
                        "accuracy_outside_only": 0.625},
            },
            "randomization": {
                "n_images": 8, "n_flat": 2, "n_changed": 7, "share_changed": 0.875,
                "min_share_changed": 0.75, "spearman_mean": 0.21, "max_correlation": 0.5,
                "logit_spread_trained": 2.5, "logit_spread_randomised": 0.8,
                "degenerate": False, "passed": True,
            },
        },
    }  # fmt: skip


def test_results_table_has_both_splits_and_every_class_with_intervals(metrics):
    table = idx.results_table(metrics)
    assert list(table.index) == list(CLASS_NAMES)
    splits = {s for s, _ in table.columns}
    official = "official Testing (copies included) (n=400)"
    assert splits == {official, "headline test (n=300)"}
    ci = metrics["evaluate"]["official"]["ci"]["specificity/glioma"]
    cell = table[(official, "specificity")]["glioma"]
    assert cell == f"{ci['point']:.3f} ({ci['low']:.3f}-{ci['high']:.3f})"
    assert idx.accuracy_line(metrics).startswith("headline test (n=300): 0.")  # headline first


def test_sanity_verdict_reads_flat_maps_as_changed_and_flags_a_degenerate_network(metrics):
    verdict = idx.sanity_verdict(metrics)
    assert verdict.startswith("Randomisation check passed: 7 of 8 maps changed")
    assert "88% where 75% is required" in verdict and "degenerate" not in verdict
    # Every randomised map flat: they all changed (similarity 0), which is what the check wants;
    # a network whose logits no longer depend on the image is named, not called a failure.
    metrics["gradcam"]["randomization"] |= {
        "n_flat": 8, "n_changed": 8, "share_changed": 1.0, "spearman_mean": 0.0,
        "logit_spread_randomised": 0.001, "degenerate": True, "passed": True,
    }  # fmt: skip
    verdict = idx.sanity_verdict(metrics)
    assert verdict.startswith("Randomisation check passed: 8 of 8") and "FAILED" not in verdict
    assert "degenerate" in verdict
    metrics["gradcam"]["randomization"] |= {"n_changed": 2, "share_changed": 0.25, "passed": False}
    assert idx.sanity_verdict(metrics).startswith("Randomisation check FAILED: 2 of 8")
    metrics["gradcam"]["randomization"] = {"n_images": 8, "n_undefined": 8, "passed": True}
    assert "older format" in idx.sanity_verdict(metrics)


def test_changes_list_the_parameters_and_accuracy_that_moved(metrics):
    previous = {**metrics, "params": config.load_profile("demo", overrides={"epochs": 3})}
    previous["evaluate"] = {"official": _block(400, 0.3, 3)}
    changed = idx.changes(previous, metrics)
    assert "<td>epochs</td>" in changed["parameters"] and "<td>3</td>" in changed["parameters"]
    assert "accuracy" in changed["metrics"] and "previous" in changed["metrics"]
    assert changed["when"] == "unknown date"
    assert idx.changes(None, metrics) is None
    assert idx.changes(metrics, metrics)["parameters"] is None  # the page says "Same parameters"


def test_index_answers_first_then_links(tmp_path, metrics):
    paths = config.Paths(root=tmp_path, profile="demo")
    write_json(paths.metrics, metrics)
    page = write_index(paths)
    assert page == paths.index_html.read_text()
    order = [page.index(s) for s in ("Accuracy:", "sensitivity", "Time", "Randomisation check",
                                     "random (baseline)", "Notebook reports", "Figures")]  # fmt: skip
    assert order == sorted(order)
    assert "10.2" in page  # minutes of all stages: (12 + 600) / 60
    assert "2026-11-29 09:00" in page and "sum of each stage's last run" in page
    assert "Does the model use the lesion?" in page and "0.61" in page
    assert "Cues outside the brain?" in page and "0.625" in page
    assert "not a medical device" in page
    assert "What the maps can and cannot show" in page


def test_the_reading_says_which_decisions_rest_on_the_lesion_and_whether_maps_were_guided(metrics):
    reading = idx.explanation_reading(metrics)
    assert "shows the tumour only where the model uses the tumour" in reading
    assert "glioma (0.610 against 0.040): there the decision rests on the lesion" in reading
    assert "lesion guidance" not in reading  # the demo profile trains unguided
    metrics["params"]["train"]["lesion_guidance"] = 3.0
    metrics["gradcam"]["erasure"]["pituitary"] = {"drop_lesion": 0.015, "drop_control": 0.01}
    reading = idx.explanation_reading(metrics)
    assert "trained with lesion guidance (weight 3)" in reading
    assert "For pituitary (0.015 against 0.010) it costs no more" in reading
    assert "does not rest on the lesion" in reading
    metrics["gradcam"]["erasure"]["meningioma"] = {"drop_lesion": 0.02, "drop_control": 0.0}
    reading = idx.explanation_reading(metrics)
    assert "For pituitary (0.015 against 0.010) and meningioma (0.020 against 0.000)" in reading


def test_model_card_is_generated_from_the_metrics(tmp_path, metrics):
    text = model_card_markdown(metrics, {})
    for heading in ("## Model details", "## Intended use", "## Training data",
                    "## Evaluation data and metrics", "## Explanations", "## Known limitations",
                    "## How to reproduce"):  # fmt: skip
        assert heading in text
    assert "not a medical device" in text and "synthetic phantoms" in text
    assert "Lesion guidance: off" in text
    metrics["data"]["protocol"] = "grouped"
    assert "Evaluation protocol `grouped`: Training and Testing pooled" in model_card_markdown(
        metrics, {}
    )
    del metrics["data"]["protocol"]
    metrics["params"]["train"]["lesion_guidance"] = 3.0
    metrics["data"] |= {"mask_root": "/m", "masks": {"train": {"glioma": 2, "pituitary": 5}}}
    guided = model_card_markdown(metrics, {})
    assert "Lesion guidance: weight 3;" in guided and "(7 images; masks: /m); a Grad-CAM" in guided
    assert "cell counts as inside by the share of it the mask covers." in guided
    metrics["params"]["train"] |= {"guidance_margin": 0.067, "guidance_cells": "centre"}
    guided = model_card_markdown(metrics, {})
    assert "(7 images; masks: /m), grown by 0.067 of the image side; a Grad-CAM" in guided
    assert "cell counts as inside when the mask covers its centre. Validation masks" in guided
    metrics["params"]["train"]["guidance_distillation"] = 0.5
    guided = model_card_markdown(metrics, {})
    assert (
        "its centre. It also adds 0.5 x the divergence of the predictions from those of " in guided
    )
    assert "(distillation at temperature 2). Validation masks are not used." in guided
    metrics["params"]["train"]["lesion_guidance"] = 0.0
    assert "around the head" not in text
    metrics["params"]["model"]["crop_to_brain"] = True
    assert " px (each image cut to the square around the head first)," in model_card_markdown(
        metrics, {}
    )
    metrics["params"]["model"]["crop_to_brain"] = False
    spec = metrics["evaluate"]["headline"]["ci"]["specificity/pituitary"]
    assert f"{spec['point']:.3f} ({spec['low']:.3f}-{spec['high']:.3f})" in text
    paths = config.Paths(root=tmp_path, profile="demo")
    write_model_card(paths)  # no metrics yet: nothing written
    assert not paths.model_card.exists()
    write_json(paths.metrics, metrics)
    write_model_card(paths)
    assert paths.model_card.read_text() == text
    card_html = paths.model_card.with_suffix(".html").read_text()
    assert re.search(r"<h2[^>]*>Intended use", card_html) and card_html.count("<table") >= 3
    # a profile's free text reaches the card as text, never as markup
    metrics["params"]["description"] = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    write_json(paths.metrics, metrics)
    write_model_card(paths)
    card_html = paths.model_card.with_suffix(".html").read_text()
    assert "<script>alert" not in card_html and "<img src=x" not in card_html
    assert "&lt;script&gt;alert(2)" in card_html


def test_paired_figures_and_the_protocol_reach_the_page(tmp_path, metrics):
    y = np.array([0, 0, 1, 1, 2, 3])
    right = np.eye(4)[y]
    wrong = np.eye(4)[[1, 0, 1, 0, 2, 3]]
    metrics["evaluate"]["paired"] = evaluation.paired_comparison(
        y, wrong, right, names=("unguided", "guided")
    )
    entry = {"n": 10, "pointing_rate": {"unguided": 0.4, "guided": 0.9}, "centre_prior": 0.3,
             "mcnemar": {"n": 10, "b": 0, "c": 5, "p_value": 0.0625}}  # fmt: skip
    metrics["gradcam"]["paired_localisation"] = {
        "val": {"names": ["unguided", "guided"], "classes": {"glioma": entry}, "overall": entry}
    }
    metrics["gradcam"]["localisation_test"] = metrics["gradcam"]["localisation"]
    metrics["data"] |= {"protocol": "grouped", "leaks": {"val_in_train": 0}}
    accuracy = idx.paired_accuracy_table(metrics)
    assert accuracy.loc["overall", "accuracy unguided"] == round(4 / 6, 4)
    assert accuracy.loc["overall", "accuracy guided"] == 1.0
    pointing = idx.paired_pointing_table(metrics)
    assert pointing["lesions"].tolist() == ["validation", "validation"]
    assert pointing.iloc[0][["pointing, unguided", "pointing, guided"]].tolist() == [0.4, 0.9]
    assert pointing.iloc[0]["McNemar p"] == "0.0625"
    paths = config.Paths(root=tmp_path, profile="demo")
    write_json(paths.metrics, metrics)
    page = write_index(paths)
    assert "Guided against unguided, same images" in page
    assert "The same scores on the headline test lesions" in page
    assert "Protocol grouped: Training and Testing pooled" in page
    assert "Copies of training images among them: 0." in page
    del metrics["evaluate"]["paired"], metrics["gradcam"]["paired_localisation"]
    assert idx.paired_accuracy_table(metrics) is None and idx.paired_pointing_table(metrics) is None
