"""The run's index.html: the answers first (results with intervals, explanation checks, time,
what changed), then the notebook reports, the files and the figure gallery.

Everything on the page comes from metrics.json (and metrics.previous.json for the changes), so
the page can be rebuilt at any time (``make html``) and never disagrees with the numbers.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from brainmri import evaluation
from brainmri.config import PIPELINE, Paths
from brainmri.io import atomic_write, dig, read_json

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


def _table(frame: pd.DataFrame, *, index: bool = True) -> str:
    """A data frame as a plain HTML table (values escaped)."""
    return frame.to_html(index=index, border=0, classes="data", na_rep="-", escape=True)


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


def split_label(split: str, block: Mapping[str, Any]) -> str:
    """A split's name for readers, with its number of images."""
    return f"{SPLIT_LABELS.get(split, split)} (n={dig(block, 'summary', 'n')})"


def accuracy_line(metrics: Mapping[str, Any]) -> str:
    """Accuracy with its 95% interval on each Testing split, in one line."""
    blocks = _splits(metrics)
    if not blocks:
        return "Not evaluated yet."
    return " · ".join(
        f"{split_label(s, b)}: {evaluation.format_interval(dig(b, 'ci', 'accuracy'), 4)}"
        for s, b in blocks.items()
    )


def results_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Per-class sensitivity and specificity with 95% intervals, a column pair per split."""
    blocks = _splits(metrics)
    if not blocks:
        return None
    table = evaluation.interval_table(blocks)
    table.columns = pd.MultiIndex.from_tuples(
        [(split_label(s, blocks[s]), kind) for s, kind in table.columns]
    )
    return table


def localisation_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Pointing game, energy ratio and faithfulness per class and method, with a "chance" row
    per class (a random point's hit rate for each pointing game, 1 for the energy ratio) and
    the baselines."""
    classes = dig(metrics, "gradcam", "localisation", "classes") or {}
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


def erasure_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """The lesion-erasure test per class: the fall of the true class's probability when the
    lesion, or a control region that changes the image as much, is inpainted away; the paired
    difference with its 95% bootstrap interval, and each erasure's mean pixel change."""
    return _per_class(
        dig(metrics, "gradcam", "erasure") or {},
        {
            "images": "n",
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
    )


def context_table(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Validation accuracy per class on the image, the brain alone and everything but the brain."""
    return _per_class(
        dig(metrics, "gradcam", "context") or {},
        {
            "images": "n",
            "as given": "accuracy_original",
            "brain only": "accuracy_brain_only",
            "outside the brain only (chance 0.25)": "accuracy_outside_only",
        },
    )


USES_LESION = 0.05
"""How much more the true class's probability must fall when the lesion is erased than when the
control region is, for the index page to say that a class's decision rests on the lesion."""


def _and_join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c': a list as a sentence says it."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def explanation_reading(metrics: Mapping[str, Any]) -> str:
    """A plain paragraph on what the explanations of this run can and cannot show.

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
    return "<p class='reading'>" + html.escape(" ".join(parts)) + "</p>"


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


def changes(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """HTML: parameters that changed since the previous run, and its headline differences."""
    if not previous:
        return "<p>No previous run of this profile to compare with.</p>"
    before, after = _flat(previous.get("params")), _flat(current.get("params"))
    changed = [
        {"parameter": k, "previous": before.get(k, "-"), "now": after.get(k, "-")}
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]
    out = []
    if changed:
        out.append(_table(pd.DataFrame(changed).map(str), index=False))
    else:
        out.append("<p>Same parameters as the previous run.</p>")
    table = evaluation.compare_table(previous, current, "previous", "now")
    table = table[table["metric"].isin(["accuracy", "macro F1", "ECE"])]
    if not table.empty:
        out.append(_table(table, index=False))
    when = dig(previous, "train", "finished") or "unknown date"
    return f"<p>Compared with the previous run (finished {html.escape(str(when))}).</p>" + "".join(
        out
    )


def _stage_links(paths: Paths) -> str:
    items = []
    for stage in PIPELINE:
        name, title = stage.name, html.escape(stage.title)
        page = paths.html_dir / f"{name}.html"
        failed = paths.failed_dir / f"{name}.ipynb"
        if failed.is_file():  # a failure is newer than any earlier page of the stage
            link = f'{title} · <a href="failed/{name}.ipynb">FAILED: partial notebook</a>'
        elif page.is_file():
            link = f'<a href="html/{name}.html">{title}</a>'
            link += f' · <a href="{name}.ipynb">notebook</a>'
        else:
            link = f"{title} · not run"
        items.append(f"<li><b>{name}</b> {link}</li>")
    return "<ol>" + "".join(items) + "</ol>"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 1.5em auto; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #ddd; }
table.data td { font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { display: inline-block; margin: 6px; width: 250px; vertical-align: top; }
figure img { width: 250px; border: 1px solid #ccc; } figcaption { font-size: 0.8em; }
.note { color: #a00; margin-top: 0; } .verdict { font-weight: 600; }
.alert { background: #fde8e8; border-left: 4px solid #c00; padding: 6px 10px; }
"""


def write_index(paths: Paths) -> str:
    """Write reports/<profile>/index.html from metrics.json and the files present.

    Args:
        paths: the run's locations.

    Returns:
        The page written (also saved to ``paths.index_html``, atomically).
    """
    metrics = read_json(paths.metrics) if paths.metrics.is_file() else {}
    previous = read_json(paths.previous_metrics) if paths.previous_metrics.is_file() else None
    fact_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in facts(metrics).items()
    )
    results = results_table(metrics)
    localisation = localisation_table(metrics)
    timing = timing_table(metrics)
    method = dig(metrics, "gradcam", "method")
    explanation = (
        _table(localisation, index=False)
        if localisation is not None
        else "<p>Localisation not scored (no tumour masks for these images).</p>"
    )
    erased = erasure_table(metrics)
    if erased is not None:
        explanation += (
            "<h3>Does the model use the lesion? (erasure test, no explanation method)</h3>"
            + _table(erased, index=False)
            + "<p>Mean fall of the true class's probability when the lesion is inpainted away, "
            "and when a region of the same shape and area elsewhere in the brain is.</p>"
        )
    context = context_table(metrics)
    if context is not None:
        explanation += (
            "<h3>Cues outside the brain? (validation accuracy on three views)</h3>"
            + _table(context, index=False)
        )
    if localisation is not None or erased is not None:
        explanation += "<h3>What the maps can and cannot show</h3>" + explanation_reading(metrics)
    figures = sorted(paths.figures_dir.glob("*.png")) if paths.figures_dir.is_dir() else []
    thumbs = "".join(
        f'<figure><a href="figures/{f.name}"><img src="figures/{f.name}" alt="{f.stem}"></a>'
        f"<figcaption>{html.escape(f.stem)}</figcaption></figure>"
        for f in figures
    )
    extras = [
        file
        for file in (
            "model_card.html",
            "model_card.md",
            "metrics.json",
            "history.csv",
            "manifest.csv",
            "run.json",
            "model.keras",
        )
        if (paths.run_dir / file).is_file()
    ]
    files = " · ".join(f'<a href="{n}">{n}</a>' for n in extras)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>brainmri report: {html.escape(paths.profile)}</title>
<style>{_STYLE}</style></head><body>
<h1>Brain-tumour MRI classification: run report ({html.escape(paths.profile)})</h1>
<p class="note">Research software; not a medical device. Not for diagnosis.</p>
{"".join(f'<p class="alert">{html.escape(a)}</p>' for a in alerts(metrics))}
<table>{fact_rows}</table>
<div class="grid">
<section><h2>Testing (95% bootstrap intervals)</h2>
<p class="verdict">Accuracy: {html.escape(accuracy_line(metrics))}</p>
{_table(results) if results is not None else ""}
<p>Testing is read once, by 04_evaluate; every choice was made on the validation split.</p>
</section>
<section><h2>Time</h2>
{_table(timing, index=False) if timing is not None else "<p>No stage has finished.</p>"}
<p>{html.escape(training_summary(metrics))}</p></section>
</div>
<h2>Explanations: {html.escape(str(method or "Grad-CAM"))} against the tumour masks of validation images</h2>
<p class="verdict">{html.escape(sanity_verdict(metrics))}</p>
{explanation}
<h2>What changed since the previous run</h2>
{changes(previous, metrics)}
<h2>Notebook reports</h2>{_stage_links(paths)}
<h2>Files</h2><p>{files or "none yet"}</p>
<h2>Figures</h2>{thumbs or "<p>none yet</p>"}
</body></html>
"""
    atomic_write(paths.index_html, page)
    return page
