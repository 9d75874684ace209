"""A model card per run (Mitchell et al. 2019, "Model Cards for Model Reporting", FAT* '19).

Generated from metrics.json and run.json only, never written by hand, so it cannot drift from
the run it describes. Markdown (model_card.md) for reading on GitHub or in a terminal, and the
same text as HTML (model_card.html) next to index.html.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from markupsafe import Markup

from brainmri.config import CLASS_NAMES, DISTILLATION_TEMPERATURE, Paths
from brainmri.io import atomic_write, dig, read_json
from brainmri.reports import tables
from brainmri.reports.index import (
    SPLIT_LABELS,
    localisation_table,
    paired_accuracy_table,
    paired_pointing_table,
    sanity_verdict,
    split_label,
    timing_table,
)
from brainmri.reports.render import render_template


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


def _audit(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The figures of the copy audit the card quotes (see 02_eda); None without an audit."""
    audit = data.get("audit") or {}
    if not audit:
        return None
    headline = dig(data, "headline_test", "images") or {}
    kinds = audit.get("pairs_by_kind") or {}
    return {
        "exact": dig(audit, "test_in_training", "exact", "total"),
        "copies": dig(audit, "test_in_training", "copies", "total"),
        "min_correlation": audit.get("min_correlation", "?"),
        "kinds": ", ".join(f"{k} {n}" for k, n in kinds.items()),
        "groups": dig(audit, "groups", "count"),
        "headline": ", ".join(f"{c} {n}" for c, n in headline.items()),
    }


def _evaluation(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The test results the card shows, as Markdown tables; None before 04_evaluate."""
    blocks = {
        s: b for s, b in (metrics.get("evaluate") or {}).items() if dig(b, "summary") is not None
    }
    if not blocks:
        return None
    first = next(iter(blocks.values()))
    accuracy = {
        split_label(s, b): tables.format_interval(dig(b, "ci", "accuracy"), 4)
        for s, b in blocks.items()
    }
    intervals = tables.interval_table(blocks)
    intervals.columns = [f"{kind} ({SPLIT_LABELS.get(s, s)})" for s, kind in intervals.columns]
    calibration = {
        SPLIT_LABELS.get(s, s): {
            "ECE": _fmt(dig(b, "calibration", "ece")),
            "ECE after temperature scaling": _fmt(dig(b, "calibration", "scaled", "ece")),
            "Brier": _fmt(dig(b, "calibration", "brier")),
        }
        for s, b in blocks.items()
    }
    paired = paired_accuracy_table(metrics)
    return {
        "n_resamples": dig(first, "bootstrap", "n_resamples"),
        "unit": dig(first, "bootstrap", "unit") or "image",
        "accuracy": _md_table(pd.DataFrame(accuracy, index=["accuracy"])),
        "intervals": _md_table(intervals),
        "temperature": _fmt(dig(metrics, "evaluate", "temperature"), 2),
        "calibration": _md_table(pd.DataFrame(calibration)),
        "paired": None if paired is None else _md_table(paired),
    }


def _md_or_none(frame: pd.DataFrame | None) -> str | None:
    """A table without its index as Markdown; None for None."""
    return None if frame is None else _md_table(frame, index=False)


def model_card_markdown(metrics: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """The model card of one run as Markdown: templates/model_card.md.j2 filled with the values
    and tables computed here.

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
    return render_template(
        "model_card.md.j2",
        profile=profile,
        description=str(params.get("description", "no description")),
        summary=summary,
        model=model_p,
        train=train_p,
        data=data,
        data_params=data_p,
        crop_note=_crop_note(model_p),
        guidance=_guidance_line(train_p, data),
        parameters={
            "total": dig(summary, "parameters", "total") or "?",
            "trainable": dig(summary, "parameters", "trainable") or "?",
        },
        commit=dig(summary, "git", "commit") or "unknown",
        python=env.get("python", "?"),
        packages=packages or "versions not recorded",
        class_names=", ".join(CLASS_NAMES),
        protocol=data.get("protocol", data_p.get("protocol", "?")),
        protocol_note=_PROTOCOL_NOTES.get(data.get("protocol", data_p.get("protocol")), ""),
        seed=dig(params, "run", "seed"),
        counts=(
            _md_table(pd.DataFrame(counts).reindex(list(CLASS_NAMES)).fillna(0).astype(int))
            if counts
            else None
        ),
        audit=_audit(data),
        evaluation=_evaluation(metrics),
        sanity_verdict=sanity_verdict(metrics),
        localisation=_md_or_none(localisation_table(metrics)),
        localisation_test=_md_or_none(localisation_table(metrics, "localisation_test")),
        paired_pointing=_md_or_none(paired_pointing_table(metrics)),
        synthetic=data.get("source") == "phantom",
        layer=dig(metrics, "gradcam", "layer") or "?",
        make_data_dir=f" DATA_DIR={data.get('root')}" if data.get("source") == "data_dir" else "",
        timing=_md_or_none(timing_table(metrics)),
    )


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
    # nbconvert's Markdown renderer, as the notebooks' HTML uses, but with escape=True: the card
    # holds free text (a profile's description, the data path) that must show as text, never run
    # as markup (nbconvert's markdown2html_mistune passes raw HTML through)
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    body = MarkdownWithMath(renderer=IPythonRenderer(escape=True)).render(text)
    page = render_template(
        "model_card.html.j2", profile=metrics.get("profile", "?"), body=Markup(body)
    )
    atomic_write(paths.model_card.with_suffix(".html"), page)
