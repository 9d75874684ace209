"""A model card per run (Mitchell et al. 2019, "Model Cards for Model Reporting", FAT* '19).

Generated from metrics.json and run.json only, never written by hand, so it cannot drift from
the run it describes. Markdown (model_card.md) for reading on GitHub or in a terminal, and the
same text as HTML (model_card.html) next to index.html.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from brainmri import evaluation
from brainmri.config import CLASS_NAMES, DISTILLATION_TEMPERATURE, Paths
from brainmri.io import atomic_write, dig, read_json
from brainmri.reports.index import (
    SPLIT_LABELS,
    localisation_table,
    sanity_verdict,
    split_label,
    timing_table,
)

_NOT_A_DEVICE = (
    "Research software for reproducing and auditing a published result. **It is not a medical "
    "device and must not be used for diagnosis, triage or any clinical decision.**"
)


def _md_table(frame: pd.DataFrame, *, index: bool = True) -> str:
    """A data frame as a GitHub-flavoured Markdown table (no extra dependency)."""
    frame = frame.reset_index() if index else frame
    frame = frame.rename(columns={"index": ""}).map(lambda v: "-" if pd.isna(v) else str(v))
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in frame.values]
    return "\n".join([head, rule, *body])


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


_PROTOCOL_NOTES = {
    "grouped": "Training and Testing pooled, whole copy groups held out for test and "
    "validation; the headline is the whole test subset.",
    "official": "the published Training and Testing folders; the headline is the Testing images "
    "without a copy of any kind in Training, the official accuracy is reported beside it.",
}


def _crop_note(model_p: dict) -> str:
    """How images were cut before resizing (``model.crop_to_brain``), for the model details."""
    return (
        " (each image cut to the square around the head first)"
        if model_p.get("crop_to_brain")
        else ""
    )


def _guidance_line(train_p: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """What the card says about lesion guidance (brainmri.guidance)."""
    weight = train_p.get("lesion_guidance") or 0
    if weight <= 0:
        return "Lesion guidance: off (the loss is the cross-entropy alone)."
    masked = sum((dig(data, "masks", "train") or {}).values())
    where = data.get("mask_root") or "the data set's own masks/"
    margin = train_p.get("guidance_margin") or 0
    grown = f", grown by {margin:g} of the image side" if margin else ""
    cells = (
        "when the mask covers its centre"
        if train_p.get("guidance_cells") == "centre"
        else "by the share of it the mask covers"
    )
    distil = train_p.get("guidance_distillation") or 0
    kept = (
        f" It also adds {distil:g} x the divergence of the predictions from those of the "
        "fine-tuned model the guided phase started from (distillation at temperature "
        f"{DISTILLATION_TEMPERATURE:g})."
        if distil > 0
        else ""
    )
    return (
        f"Lesion guidance: weight {weight:g}; the loss adds the share of Grad-CAM energy outside "
        f"the expert tumour mask of each training image that has one ({masked} images; masks: "
        f"{where}){grown}; a Grad-CAM cell counts as inside {cells}.{kept} Validation masks are "
        "not used."
    )


def model_card_markdown(metrics: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """The model card of one run as Markdown.

    Args:
        metrics: the run's metrics.json content (may be partial: missing parts say so).
        run: the run's run.json content ({} when training has not run).

    Returns:
        The card's Markdown text.
    """
    profile = metrics.get("profile", "?")
    params = metrics.get("params") or {}
    model_p, train_p, data_p = (params.get(k) or {} for k in ("model", "train", "data"))
    data = metrics.get("data") or {}
    counts = data.get("counts") or {}
    summary = run.get("summary") or metrics.get("train") or {}
    env = run.get("environment") or {}
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
    commit = dig(summary, "git", "commit") or "unknown"

    blocks = {
        s: b for s, b in (metrics.get("evaluate") or {}).items() if dig(b, "summary") is not None
    }
    lines = [
        f"# Model card: brainmri, profile `{profile}`",
        "",
        "Generated from `metrics.json` and `run.json` by `brainmri.reports.model_card`; "
        "regenerate with `make html PROFILE=" + str(profile) + "`. Structure after Mitchell "
        "et al. (2019), *Model Cards for Model Reporting*.",
        "",
        "## Model details",
        f"- Model: {summary.get('model', 'not trained')}; {profile} profile "
        f"({params.get('description', 'no description')}).",
        f"- Backbone `{model_p.get('backbone', '?')}`, weights `{model_p.get('weights', '?')}`, "
        f"input {model_p.get('image_size', '?')} px{_crop_note(model_p)}, trainable policy "
        f"`{model_p.get('trainable', '?')}`, head Dense {model_p.get('dense_units', '?')} with "
        f"dropout {model_p.get('dropout', '?')}, 4-way softmax.",
        f"- Training: Adam at {train_p.get('learning_rate', '?')}, batch "
        f"{train_p.get('batch_size', '?')}, up to {train_p.get('epochs', '?')} epochs after "
        f"{train_p.get('warmup_epochs', 0)} warm-up epochs; early stopping and the checkpoint "
        "watch validation accuracy.",
        f"- {_guidance_line(train_p, data)}",
        f"- Parameters: {dig(summary, 'parameters', 'total') or '?'} in all, "
        f"{dig(summary, 'parameters', 'trainable') or '?'} trained.",
        f"- Code: git commit `{commit}`; trained {summary.get('started', '?')} to "
        f"{summary.get('finished', '?')}.",
        f"- Software: Python {env.get('python', '?')}; {packages or 'versions not recorded'}.",
        "",
        "## Intended use",
        f"- {_NOT_A_DEVICE}",
        "- Intended: reproducing the Kaggle *Brain Tumor MRI Dataset* benchmark, studying "
        "transfer learning and explanation methods, teaching.",
        f"- Output: one of {', '.join(CLASS_NAMES)} for a single 2-D slice, with class "
        "probabilities and a Grad-CAM map. A slice of any other kind (another modality, "
        "another tumour type, a non-brain image) still gets one of these four labels.",
        "",
        "## Training data",
        f"- Source: {data.get('source', '?')} ({data.get('detail', '')}); "
        f"{data.get('files', '?')} image files, manifest SHA-256 "
        f"`{data.get('manifest_sha256', '?')}`.",
        f"- Evaluation protocol `{data.get('protocol', data_p.get('protocol', '?'))}`: "
        + _PROTOCOL_NOTES.get(data.get("protocol", data_p.get("protocol")), "")
        + f" Validation: {data_p.get('val_fraction', '?')} of the training pool by whole copy "
        f"groups, stratified (seed {dig(params, 'run', 'seed')}); train-side de-duplication: "
        f"`{data_p.get('dedup', '?')}`.",
    ]
    if counts:
        table = pd.DataFrame(counts).reindex(list(CLASS_NAMES)).fillna(0).astype(int)
        lines += ["", _md_table(table)]
    audit = data.get("audit") or {}
    if audit:
        headline = dig(data, "headline_test", "images") or {}
        kinds = audit.get("pairs_by_kind") or {}
        lines += [
            "",
            "Copy audit of the data set (see 02_eda): "
            f"{dig(audit, 'test_in_training', 'exact', 'total')} official Testing images are "
            "byte copies of Training images and "
            f"{dig(audit, 'test_in_training', 'copies', 'total')} have a copy of some kind there "
            "(64x64 thumbnails whose rank correlation reaches "
            f"{audit.get('min_correlation', '?')} as they are, mirrored left-right or cut to the "
            "head; copy pairs by kind: "
            + ", ".join(f"{k} {n}" for k, n in kinds.items())
            + f"). {dig(audit, 'groups', 'count')} distinct pictures (copy groups). "
            "The headline test images, none with a copy in train or validation: "
            + ", ".join(f"{c} {n}" for c, n in headline.items())
            + ".",
        ]
    lines += ["", "## Evaluation data and metrics"]
    if blocks:
        first = next(iter(blocks.values()))
        lines += [
            "Testing, read once by 04_evaluate. Point estimates with 95% percentile-bootstrap "
            f"intervals ({dig(first, 'bootstrap', 'n_resamples')} resamples; each draws "
            f"{dig(first, 'bootstrap', 'unit') or 'image'}s).",
            "",
        ]
        accuracy = {
            split_label(s, b): evaluation.format_interval(dig(b, "ci", "accuracy"), 4)
            for s, b in blocks.items()
        }
        lines += [_md_table(pd.DataFrame(accuracy, index=["accuracy"])), ""]
        table = evaluation.interval_table(blocks)
        table.columns = [f"{kind} ({SPLIT_LABELS.get(s, s)})" for s, kind in table.columns]
        lines.append(_md_table(table))
        cal = {
            SPLIT_LABELS.get(s, s): {
                "ECE": _fmt(dig(b, "calibration", "ece")),
                "ECE after temperature scaling": _fmt(dig(b, "calibration", "scaled", "ece")),
                "Brier": _fmt(dig(b, "calibration", "brier")),
            }
            for s, b in blocks.items()
        }
        lines += [
            "",
            "Calibration (temperature fitted on the validation split, "
            f"T = {_fmt(dig(metrics, 'evaluate', 'temperature'), 2)}):",
            "",
            _md_table(pd.DataFrame(cal)),
        ]
    else:
        lines.append("Not evaluated yet.")
    lines += ["", "## Explanations", sanity_verdict(metrics)]
    localisation = localisation_table(metrics)
    if localisation is not None:
        lines += [
            "",
            "Localisation against the tumour masks of the evaluated images (pointing game, "
            "energy inside the mask over its area, deletion/insertion AUC), with a random and "
            "a centred baseline:",
            "",
            _md_table(localisation, index=False),
        ]
    else:
        lines += ["", "Localisation not scored: these images have no tumour masks."]
    timing = timing_table(metrics)
    synthetic = data.get("source") == "phantom"
    lines += [
        "",
        "## Known limitations",
    ]
    if synthetic:
        lines.append(
            "- **Trained and tested on synthetic phantoms** (brainmri.phantom), not on MRI: "
            "these numbers show that the pipeline works, and say nothing about real scans."
        )
    lines += [
        "- Domain: 2-D T1-weighted contrast-enhanced slices (axial, coronal and sagittal) from "
        "the Kaggle data set's sources (figshare, SARTAJ, Br35H), resized to a square. Other "
        "scanners, sequences (T2, FLAIR), 3-D volumes, children and other tumour types were "
        "never tested.",
        "- The four classes are not the clinical differential: a slice with a metastasis, "
        "lymphoma or any other lesion still gets one of them.",
        "- The official Testing split holds copies of Training images; the clean split removes "
        "exact and pixel-confirmed near copies, but neighbouring slices of one patient's series "
        "(correlation below the threshold) can remain on both sides: the data set has no "
        "patient identifiers.",
        "- The intervals resample near-copy clusters within Testing (a cluster bootstrap); "
        "slices of one patient that are not copies still count as independent.",
        f"- Grad-CAM maps are coarse (they have the resolution of the target layer "
        f"`{dig(metrics, 'gradcam', 'layer') or '?'}`, 1/32 of the input side on an "
        "EfficientNet) and are a view of the model, not a segmentation.",
        "",
        "## How to reproduce",
        "```",
        f"git checkout {commit}",
        f"make all PROFILE={profile}"
        + (f" DATA_DIR={data.get('root')}" if data.get("source") == "data_dir" else ""),
        "```",
    ]
    if timing is not None:
        lines += ["", "Wall time of each stage in this run:", "", _md_table(timing, index=False)]
    return "\n".join(lines) + "\n"


def write_model_card(paths: Paths) -> None:
    """Write reports/<profile>/model_card.md and model_card.html (nothing before any metrics).

    Args:
        paths: the run's locations.
    """
    if not paths.metrics.is_file():
        return
    metrics = read_json(paths.metrics)
    run = read_json(paths.run_json) if paths.run_json.is_file() else {}
    text = model_card_markdown(metrics, run)
    atomic_write(paths.model_card, text)
    from nbconvert.filters.markdown_mistune import markdown2html_mistune  # nbconvert's renderer

    body = markdown2html_mistune(text)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Model card: {metrics.get("profile", "?")}</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 960px; margin: 1.5em auto;
padding: 0 1em; color: #222; }} table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
pre {{ background: #f6f6f6; padding: 0.6em; }}</style></head>
<body>{body}<p><a href="index.html">back to the run report</a></p></body></html>
"""
    atomic_write(paths.model_card.with_suffix(".html"), page)
