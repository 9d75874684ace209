"""The run's index.html: the answers first (results with intervals, explanation checks, time,
what changed), then the notebook reports, the files and the figure gallery.

Everything on the page comes from metrics.json (and metrics.previous.json for the changes), so
the page can be rebuilt at any time (``make html``) and never disagrees with the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from markupsafe import Markup

from brainmri.config import PIPELINE, Paths
from brainmri.io import atomic_write, dig, read_json
from brainmri.reports import tables
from brainmri.reports.render import render_template

SPLIT_LABELS = {
    "headline": "headline test",
    "official": "official Testing (copies included)",
    "unguided": "headline test, before guidance",
}
"""How the report names the test blocks of metrics.json's "evaluate" section, headline first:
"headline" holds no image with a copy of any kind in train or validation (the manifest's
headline_test); "official" is the published Testing folder, copies of Training included;
"unguided" is the same run's model before its guided phase, on the headline images."""

BASELINES = ("random", "centre")
"""The localisation baselines every explanation method is compared with."""


def _flat(params: Any) -> dict[str, Any]:
    """Nested parameters (as metrics.json keeps them) as one flat mapping; {} when absent."""
    sections = params.values() if isinstance(params, Mapping) else []
    return {
        k: v for section in sections if isinstance(section, Mapping) for k, v in section.items()
    }


def _table(frame: pd.DataFrame | None, *, index: bool = True) -> Markup | None:
    """A data frame as a plain HTML table (values escaped), safe to insert; None for None."""
    if frame is None:
        return None
    return Markup(frame.to_html(index=index, border=0, classes="data", na_rep="-", escape=True))


def _splits(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The evaluation blocks of metrics.json (those with a summary), official first."""
    evaluate = dig(metrics, "evaluate") or {}
    blocks = {k: v for k, v in evaluate.items() if dig(v, "summary")}
    order = [s for s in SPLIT_LABELS if s in blocks] + sorted(set(blocks) - set(SPLIT_LABELS))
    return {s: blocks[s] for s in order}


def facts(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Profile, data source, model, date and commit: what this run is."""
    data = metrics.get("data", {})
    train = metrics.get("train", {})
    git = train.get("git", {})
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    return {
        "Profile": f"{metrics.get('profile', '?')}: {dig(metrics, 'params', 'description') or ''}",
        "Data": f"{data.get('source', '?')}: {data.get('detail', '')}",
        "Model": str(train.get("model", "not trained")),
        "Finished": str(train.get("finished") or ""),
        "Git commit": commit,
    }


def alerts(metrics: Mapping[str, Any]) -> list[str]:
    """What must be read before any number: a failed last run, empty Testing classes."""
    out = []
    failed = metrics.get("failed_stage")
    if failed:
        out.append(
            f"The last run failed at stage {failed} (its partly executed notebook is in "
            "failed/); the results below are those of the last successful runs."
        )
    out += [w[0].upper() + w[1:] + "." for w in dig(metrics, "data", "warnings") or []]
    return out


def protocol_note(metrics: Mapping[str, Any]) -> str:
    """One sentence on the evaluation protocol and what the headline images are."""
    protocol = dig(metrics, "data", "protocol")
    leaks = dig(metrics, "data", "leaks") or {}
    if protocol == "grouped":
        text = (
            "Protocol grouped: Training and Testing pooled, whole copy groups (as is, mirrored "
            "or re-cut) held out for test and validation."
        )
    elif protocol == "official":
        text = (
            "Protocol official: the published folders; the headline leaves out the Testing "
            "images with a copy of any kind in Training, the official figure counts them."
        )
    else:
        return "Evaluation protocol not recorded."
    if leaks:
        text += f" Copies of training images among them: {sum(leaks.values())}."
    return text


def split_label(split: str, block: Mapping[str, Any]) -> str:
    """A split's name for readers, with its number of images."""
    return f"{SPLIT_LABELS.get(split, split)} (n={dig(block, 'summary', 'n')})"


def accuracy_line(metrics: Mapping[str, Any]) -> str:
    """Accuracy with its 95% interval on each Testing split, in one line."""
    blocks = _splits(metrics)
    if not blocks:
        return "Not evaluated yet."
    return " · ".join(
        f"{split_label(s, b)}: {tables.format_interval(dig(b, 'ci', 'accuracy'), 4)}"
        for s, b in blocks.items()
    )


def results_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Per-class sensitivity and specificity with 95% intervals, a column pair per split."""
    blocks = _splits(metrics)
    if not blocks:
        return None
    table = tables.interval_table(blocks)
    table.columns = pd.MultiIndex.from_tuples(
        [(split_label(s, blocks[s]), kind) for s, kind in table.columns]
    )
    return table


def localisation_table(
    metrics: Mapping[str, Any], key: str = "localisation"
) -> pd.DataFrame | None:
    """Pointing game, energy ratio and faithfulness per class and method, with a "chance" row
    per class (a random point's hit rate for each pointing game, 1 for the energy ratio) and
    the baselines; ``key`` "localisation" (validation lesions) or "localisation_test"."""
    classes = dig(metrics, "gradcam", key, "classes") or {}
    rows = []
    for label, entry in classes.items():
        rows.append(
            {
                "class": label,
                "method": "chance",
                "images": entry.get("n_images"),
                "pointing": entry.get("tolerant_area_fraction"),
                "pointing (strict)": entry.get("mask_area_fraction"),
                "energy / area": 1.0,
            }
        )
        for method, scores in (entry.get("methods") or {}).items():
            rows.append(
                {
                    "class": label,
                    "method": method + (" (baseline)" if method in BASELINES else ""),
                    "images": entry.get("n_images"),
                    "pointing": scores.get("pointing_rate"),
                    "pointing (strict)": scores.get("pointing_rate_strict"),
                    "energy / area": scores.get("energy_ratio"),
                    "deletion AUC": scores.get("deletion_auc"),
                    "insertion AUC": scores.get("insertion_auc"),
                    # the AUCs may cover the first images only (gradcam.faithfulness_images)
                    "AUC images": entry.get("n_faithfulness", entry.get("n_images")),
                }
            )
    return pd.DataFrame(rows).round(3) if rows else None


def paired_accuracy_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """A guided run against its unguided start on the same headline images (04_evaluate)."""
    paired = dig(metrics, "evaluate", "paired")
    return tables.p_values_as_text(tables.paired_table(paired).round(4)) if paired else None


def paired_pointing_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Grad-CAM pointing of a guided run and its unguided start on the same lesions (05's
    ``gradcam.paired_localisation``; see :func:`tables.pointing_pairs_table`)."""
    table = tables.pointing_pairs_table(dig(metrics, "gradcam", "paired_localisation") or {})
    return None if table is None else tables.p_values_as_text(table)


def sanity_verdict(metrics: Mapping[str, Any]) -> str:
    """One sentence on the model-parameter randomisation check (Adebayo et al. 2018)."""
    check = dig(metrics, "gradcam", "randomization")
    if not check:
        return "Randomisation check: not run."
    if "share_changed" not in check:  # written before maps were scored by the share changed
        return "Randomisation check: recorded in an older format; rerun 05_gradcam."
    return _share_verdict(check)


def _share_verdict(check: Mapping[str, Any]) -> str:
    """The randomisation verdict from the share of maps that changed (flat maps count as
    changed: similarity 0), with the randomised network's logit spread beside it."""
    verdict = "passed" if check.get("passed") else "FAILED"
    text = (
        f"Randomisation check {verdict}: {check.get('n_changed')} of {check.get('n_images')} "
        f"maps changed (Spearman correlation with the trained map below "
        f"{check.get('max_correlation')}, a flat map scoring 0; {check.get('n_flat', 0)} flat), "
        f"{check['share_changed']:.0%} where {check.get('min_share_changed', 0):.0%} is required."
    )
    spread, trained = check.get("logit_spread_randomised"), check.get("logit_spread_trained")
    if spread is not None and trained is not None:
        text += f" Logit spread of the randomised network {spread:.3f} (trained {trained:.3f})"
        if check.get("degenerate"):
            text += ": degenerate, its output barely depends on the image, so the maps show little"
        text += "."
    return text


def _per_class(classes: Mapping[str, Any], columns: Mapping[str, str]) -> pd.DataFrame | None:
    """One row per class of a ``{class: {key: value}}`` block, columns renamed from the keys."""
    rows = [
        {"class": label, **{column: entry.get(key) for column, key in columns.items()}}
        for label, entry in classes.items()
    ]
    return pd.DataFrame(rows).round(3) if rows else None


_GRADCAM_COLUMNS: dict[str, dict[str, str]] = {
    "erasure": {
        "drop, lesion erased": "drop_lesion",
        "drop, control erased": "drop_control",
        "lesion minus control": "lesion_minus_control",
        "95% low": "lesion_minus_control_low",
        "95% high": "lesion_minus_control_high",
        "prediction changed, lesion": "changed_lesion",
        "prediction changed, control": "changed_control",
        "lesion costs more": "lesion_costs_more",
        "mean pixel change, lesion": "pixel_change_lesion",
        "mean pixel change, control": "pixel_change_control",
        "no matched control": "no_control",
    },
    "context": {
        "as given": "accuracy_original",
        "brain only": "accuracy_brain_only",
        "outside the brain only (chance 0.25)": "accuracy_outside_only",
    },
}
"""The columns (after "class" and "images") of the per-class tables of metrics.json's gradcam
sections, as {column: key}."""


def _gradcam_per_class(metrics: Mapping[str, Any], section: str) -> pd.DataFrame | None:
    """The per-class table of a gradcam section: class, images, then its `_GRADCAM_COLUMNS`."""
    columns = {"images": "n", **_GRADCAM_COLUMNS[section]}
    return _per_class(dig(metrics, "gradcam", section) or {}, columns)


def erasure_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """The lesion-erasure test per class: the fall of the true class's probability when the
    lesion, or a control region that changes the image as much, is inpainted away; the paired
    difference with its 95% bootstrap interval, and each erasure's mean pixel change."""
    return _gradcam_per_class(metrics, "erasure")


def context_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Validation accuracy per class on the image, the brain alone and everything but the brain."""
    return _gradcam_per_class(metrics, "context")


USES_LESION = 0.05
"""How much more the true class's probability must fall when the lesion is erased than when the
control region is, for the index page to say that a class's decision rests on the lesion."""


def _and_join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c': a list as a sentence says it."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def explanation_reading(metrics: Mapping[str, Any]) -> str:
    """A plain paragraph (text, not HTML) on what the explanations of this run can and cannot
    show.

    Grad-CAM shows where the model looks; whether that is the tumour depends on the model. The
    paragraph says so, whether training pulled the maps onto the masks (lesion guidance), and,
    from the erasure test, for which classes the decision rests on the lesion.
    """
    parts = [
        "Grad-CAM shows where this model looks, at the resolution of its last feature map; it "
        "shows the tumour only where the model uses the tumour."
    ]
    weight = dig(metrics, "params", "train", "lesion_guidance") or 0
    if weight > 0:
        parts.append(
            f"This model was trained with lesion guidance (weight {weight:g}): the Grad-CAM "
            "energy of training images outside their expert masks was part of the loss. The "
            "localisation scores are measured on validation images whose masks training never "
            "saw, but they measure a property it was trained for; the erasure test, which uses "
            "no explanation, says whether the decision rests on the lesion."
        )
    erasure = dig(metrics, "gradcam", "erasure") or {}
    uses, ignores = [], []
    for label, entry in erasure.items():
        lesion, control = entry.get("drop_lesion"), entry.get("drop_control")
        if lesion is None or control is None:
            continue
        said = f"{label} ({lesion:.3f} against {control:.3f})"
        (uses if lesion - control >= USES_LESION else ignores).append(said)
    if uses:
        parts.append(
            "Erasing the lesion costs the true class more probability than erasing a control "
            f"region for {_and_join(uses)}: there the decision rests on the lesion."
        )
    if ignores:
        parts.append(
            f"For {_and_join(ignores)} it costs no more (within {USES_LESION}): the decision "
            "does not rest on the lesion's pixels, whatever the maps show."
        )
    return " ".join(parts)


def timing_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Wall time of each stage's last run and when it finished; their sum."""
    seconds = metrics.get("stage_seconds") or {}
    if not seconds:
        return None
    runs = metrics.get("stage_runs") or {}
    rows = [
        {
            "stage": s,
            "minutes": round(t / 60, 1),
            "finished (UTC)": (runs.get(s) or {}).get("finished_utc") or "-",
        }
        for s, t in seconds.items()
    ]
    rows.append(
        {
            "stage": "all stages",
            "minutes": round(sum(seconds.values()) / 60, 1),
            # stages that were up to date keep the time of the run that made their outputs
            "finished (UTC)": "sum of each stage's last run",
        }
    )
    return pd.DataFrame(rows)


def training_summary(metrics: Mapping[str, Any]) -> str:
    """Epochs run, the best epoch and its validation accuracy, seconds per epoch."""
    train = metrics.get("train") or {}
    best = train.get("best") or {}
    if not train:
        return "Not trained yet."
    parts = [f"{train.get('epochs_run', '?')} epochs"]
    if isinstance(best.get("val_accuracy"), int | float):
        parts.append(
            f"best validation accuracy {best['val_accuracy']:.4f} at epoch {best.get('epoch')}"
        )
    if isinstance(train.get("seconds_per_epoch"), int | float):
        parts.append(f"{train['seconds_per_epoch']:.0f} s per epoch")
    return "Training: " + ", ".join(parts) + f" (status: {train.get('status', '?')})."


def changes(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What changed since the previous run, for the index page; None without a previous run.

    Returns:
        "when": the previous run's finishing date; "parameters": an HTML table of the parameters
        that changed (None when none did); "metrics": an HTML table of the headline differences
        (accuracy, macro F1, ECE per split; None when it has no rows).
    """
    if not previous:
        return None
    before, after = _flat(previous.get("params")), _flat(current.get("params"))
    changed = [
        {"parameter": k, "previous": before.get(k, "-"), "now": after.get(k, "-")}
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]
    table = tables.compare_table(previous, current, "previous", "now")
    table = table[table["metric"].isin(["accuracy", "macro F1", "ECE"])]
    return {
        "when": str(dig(previous, "train", "finished") or "unknown date"),
        "parameters": _table(pd.DataFrame(changed).map(str), index=False) if changed else None,
        "metrics": None if table.empty else _table(table, index=False),
    }


def _stages(paths: Paths) -> list[dict[str, str | None]]:
    """Each stage's name, title and what it left: "failed" (a partial notebook, newer than any
    earlier page), "page" (its HTML report) or None (not run)."""
    out = []
    for stage in PIPELINE:
        if (paths.failed_dir / f"{stage.name}.ipynb").is_file():
            state = "failed"
        elif (paths.html_dir / f"{stage.name}.html").is_file():
            state = "page"
        else:
            state = None
        out.append({"name": stage.name, "title": stage.title, "state": state})
    return out


_FILES = (
    "model_card.html",
    "model_card.md",
    "metrics.json",
    "history.csv",
    "manifest.csv",
    "run.json",
    "model.keras",
)
"""The files of a run the index page links to, where present."""


def write_index(paths: Paths) -> str:
    """Write reports/<profile>/index.html from metrics.json and the files present.

    The page is templates/index.html.j2 filled with the values and tables computed here.

    Args:
        paths: the run's locations.

    Returns:
        The page written (also saved to ``paths.index_html``, atomically).
    """
    metrics = read_json(paths.metrics) if paths.metrics.is_file() else {}
    previous = read_json(paths.previous_metrics) if paths.previous_metrics.is_file() else None
    localisation = localisation_table(metrics)
    erased = erasure_table(metrics)
    figures = sorted(paths.figures_dir.glob("*.png")) if paths.figures_dir.is_dir() else []
    page = render_template(
        "index.html.j2",
        profile=paths.profile,
        alerts=alerts(metrics),
        facts=facts(metrics),
        accuracy_line=accuracy_line(metrics),
        results=_table(results_table(metrics)),
        paired_accuracy=_table(paired_accuracy_table(metrics)),
        protocol_note=protocol_note(metrics),
        timing=_table(timing_table(metrics), index=False),
        training_summary=training_summary(metrics),
        method=str(dig(metrics, "gradcam", "method") or "Grad-CAM"),
        sanity_verdict=sanity_verdict(metrics),
        localisation=_table(localisation, index=False),
        localisation_test=_table(localisation_table(metrics, "localisation_test"), index=False),
        paired_pointing=_table(paired_pointing_table(metrics), index=False),
        erasure=_table(erased, index=False),
        context=_table(context_table(metrics), index=False),
        reading=(
            explanation_reading(metrics) if localisation is not None or erased is not None else None
        ),
        changes=changes(previous, metrics),
        stages=_stages(paths),
        files=[name for name in _FILES if (paths.run_dir / name).is_file()],
        figures=[{"name": f.name, "stem": f.stem} for f in figures],
    )
    atomic_write(paths.index_html, page)
    return page
