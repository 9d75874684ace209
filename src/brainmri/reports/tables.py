"""Report tables of evaluation blocks, and the comparison of two runs' headline metrics.

They read the blocks of ``brainmri.evaluation.evaluate_split`` (as metrics.json keeps them) and
lay them out for the notebooks, the index page, the model card and ``brainmri compare``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.io import dig

__all__ = [
    "calibration_table",
    "compare_runs",
    "compare_table",
    "format_interval",
    "headline_table",
    "interval_table",
    "paired_table",
    "per_class_table",
]


def headline_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One column per split: images, accuracy with its interval, macro F1, kappa, MCC and ECE.

    Args:
        blocks: evaluation blocks (as :func:`~brainmri.evaluation.evaluate_split` returns
            them) keyed by split name.

    Returns:
        A table with one row per headline metric and one column per split.
    """
    return pd.DataFrame(
        {
            split: {
                "images": b["summary"]["n"],
                "accuracy": b["summary"]["accuracy"],
                "accuracy 95% CI": "{low:.4f} to {high:.4f}".format(**b["ci"]["accuracy"]),
                "macro F1": b["summary"]["macro"]["f1"],
                "Cohen's kappa": b["summary"]["cohen_kappa"],
                "MCC": b["summary"]["mcc"],
                "ECE": b["calibration"]["ece"],
            }
            for split, b in blocks.items()
        }
    )


def format_interval(entry: Any, digits: int = 3) -> str:
    """An interval (of :func:`~brainmri.evaluation.bootstrap_ci` or a block's "ci") as
    "point (low-high)"; "-" if none."""
    point, low, high = (dig(entry, key) for key in ("point", "low", "high"))
    if not isinstance(point, int | float):
        return "-"
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"{point:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"
    return f"{point:.{digits}f}"


def interval_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Each class's sensitivity and specificity as "point (low-high)", per split.

    Args:
        blocks: evaluation blocks keyed by split name; intervals missing from a block (one
            written by an older version) show as "-".

    Returns:
        A table of strings with one row per class and a (split, "sensitivity" /
        "specificity") column pair.
    """
    columns = {
        (split, kind): [format_interval(dig(b, "ci", f"{kind}/{name}")) for name in CLASS_NAMES]
        for split, b in blocks.items()
        for kind in ("sensitivity", "specificity")
    }
    return pd.DataFrame(columns, index=list(CLASS_NAMES))


def per_class_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Precision, recall (sensitivity), specificity, F1, ROC AUC and support per class and split.

    Args:
        blocks: evaluation blocks keyed by split name.

    Returns:
        A table with one row per class and a (split, metric) column pair per value.
    """
    columns = ["precision", "recall", "specificity", "f1", "roc_auc", "support"]
    return pd.concat(
        {split: pd.DataFrame(b["summary"]["per_class"]).T[columns] for split, b in blocks.items()},
        axis=1,
    )


def calibration_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """ECE, Brier score and NLL per split, before and after temperature scaling.

    Args:
        blocks: evaluation blocks keyed by split name, evaluated with a temperature.

    Returns:
        A table with one row per calibration metric and one column per split.
    """
    table = {}
    for split, b in blocks.items():
        cal, scaled = b["calibration"], b["calibration"]["scaled"] or {}
        table[split] = {
            "ECE": cal["ece"],
            "Brier": cal["brier"],
            "NLL": cal["nll"],
            "ECE scaled": scaled.get("ece"),
            "Brier scaled": scaled.get("brier"),
            "NLL scaled": scaled.get("nll"),
        }
    return pd.DataFrame(table)


def p_values_as_text(table: pd.DataFrame, column: str = "McNemar p") -> pd.DataFrame:
    """The table with its p-values written for reading: "< 0.0001" below that, else 4
    decimals (a rounded 0.0000 reads as impossible, and 3.6e-05 is hard to compare by eye).

    Args:
        table: a table with a p-value column (e.g. :func:`paired_table`).
        column: that column's name.

    Returns:
        A copy whose column holds text ("" where the p-value is missing).
    """

    def text(p: Any) -> str:
        if p is None or not math.isfinite(p):
            return ""
        return "< 0.0001" if p < 1e-4 else f"{p:.4f}"

    return table.assign(**{column: table[column].map(text)})


def paired_table(comparison: Mapping[str, Any]) -> pd.DataFrame:
    """A :func:`~brainmri.evaluation.paired_comparison` as a table: one row per class, then
    "overall".

    Args:
        comparison: the mapping :func:`~brainmri.evaluation.paired_comparison` returns.

    Returns:
        Columns "n", "accuracy <a>", "accuracy <b>", "only <a> right" (McNemar's b), "only
        <b> right" (c) and "McNemar p", where <a> and <b> are the model names.
    """
    name_a, name_b = comparison["names"]
    rows = {**comparison["per_class"], "overall": comparison["overall"]}
    return pd.DataFrame.from_dict(
        {
            label: {
                "n": row["n"],
                f"accuracy {name_a}": row["accuracy"][name_a],
                f"accuracy {name_b}": row["accuracy"][name_b],
                f"only {name_a} right": row["mcnemar"]["b"],
                f"only {name_b} right": row["mcnemar"]["c"],
                "McNemar p": row["mcnemar"]["p_value"],
            }
            for label, row in rows.items()
        },
        orient="index",
    )


# --- run comparison ---------------------------------------------------------------------------

_SPLIT_ORDER = ("headline", "official", "unguided")


def pointing_pairs_table(paired: Mapping[str, Any]) -> pd.DataFrame | None:
    """Grad-CAM tolerant pointing of two models on the same lesions, per scope and class.

    Args:
        paired: ``{scope: explain.paired_pointing(...)}``, scope "val" or "test" (05_gradcam's
            ``gradcam.paired_localisation``).

    Returns:
        One row per scope and class (then "overall") with n, each model's pointing rate, the
        centre prior and McNemar's p; None without pairs.
    """
    rows = []
    for scope, block in paired.items():
        names = block.get("names") or []
        for label, entry in {**block.get("classes", {}), "overall": block.get("overall")}.items():
            if not entry:
                continue
            rows.append(
                {
                    "lesions": {"val": "validation", "test": "headline test"}.get(scope, scope),
                    "class": label,
                    "n": entry.get("n"),
                    **{f"pointing, {n}": (entry.get("pointing_rate") or {}).get(n) for n in names},
                    "centre prior": entry.get("centre_prior"),
                    "McNemar p": dig(entry, "mcnemar", "p_value"),
                }
            )
    if not rows:
        return None
    table = pd.DataFrame(rows)
    # rates to 3 decimals; p-values kept whole (p_values_as_text writes them for reading)
    return table.round({c: 3 for c in table.columns if c != "McNemar p"})


def _block_headline(block: Any, class_names: Sequence[str]) -> dict[str, float | None]:
    """The headline numbers of one evaluation block (None where missing)."""
    rows = {
        "accuracy": dig(block, "summary", "accuracy"),
        "macro F1": dig(block, "summary", "macro", "f1"),
        "Cohen kappa": dig(block, "summary", "cohen_kappa"),
        "MCC": dig(block, "summary", "mcc"),
        "ECE": dig(block, "calibration", "ece"),
        "ECE (T-scaled)": dig(block, "calibration", "scaled", "ece"),
    }
    for name in class_names:
        rows[f"sensitivity {name}"] = dig(block, "summary", "per_class", name, "recall")
    return {
        k: (v if isinstance(v, int | float) and math.isfinite(v) else None) for k, v in rows.items()
    }


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str) -> str:
    """Return a plain-text table of headline metrics of two runs per split, with b - a.

    The text form of :func:`compare_table` (same arguments), for the terminal.
    """
    return compare_table(a, b, name_a, name_b).to_string(index=False)


def compare_table(
    a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str
) -> pd.DataFrame:
    """Headline metrics of two runs per split, with b - a, formatted as strings.

    Args:
        a: the metrics.json content of the first run; its per-split evaluation blocks are
            read from a["evaluate"] (entries holding a "summary").
        b: the metrics.json content of the second run, read the same way.
        name_a: the column heading of run a.
        name_b: the column heading of run b; when both names are equal they get " (a)" and
            " (b)" appended.

    Returns:
        One row per split and metric (accuracy, macro F1, Cohen kappa, MCC, ECE, ECE after
        temperature scaling and the sensitivity of each class), with the values of both
        runs and b - a to four decimals; "-" where a value is missing.
    """
    # Only the per-split blocks (they hold a "summary"); temperature, TTA and errors are not splits.
    eval_a = {k: v for k, v in (dig(a, "evaluate") or {}).items() if dig(v, "summary")}
    eval_b = {k: v for k, v in (dig(b, "evaluate") or {}).items() if dig(v, "summary")}
    splits = [s for s in _SPLIT_ORDER if s in eval_a or s in eval_b]
    splits += sorted((set(eval_a) | set(eval_b)) - set(splits))
    if not splits:
        splits = list(_SPLIT_ORDER)
    found = {
        c
        for ev in (eval_a, eval_b)
        for block in ev.values()
        for c in (dig(block, "summary", "per_class") or {})
    }
    class_names = [c for c in CLASS_NAMES if c in found] + sorted(found - set(CLASS_NAMES))
    if not class_names:
        class_names = list(CLASS_NAMES)

    def fmt(value: float | None, signed: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:+.4f}" if signed else f"{value:.4f}"

    col_a, col_b = (name_a, name_b) if name_a != name_b else (f"{name_a} (a)", f"{name_b} (b)")
    records = []
    for split in splits:
        head_a = _block_headline(eval_a.get(split), class_names)
        head_b = _block_headline(eval_b.get(split), class_names)
        for metric, va in head_a.items():
            vb = head_b[metric]
            diff = vb - va if va is not None and vb is not None else None
            records.append(
                {
                    "split": split,
                    "metric": metric,
                    col_a: fmt(va),
                    col_b: fmt(vb),
                    f"{col_b} - {col_a}": fmt(diff, signed=True),
                }
            )
    return pd.DataFrame.from_records(records)


def ood_table(guard: Mapping[str, Any]) -> pd.DataFrame:
    """The OOD guard's results per probe kind, then per group (``evaluate.ood.guard``).

    Args:
        guard: the record of ``brainmri.ood.measure_guard``.

    Returns:
        One row per kind and per pooled group: group, images, the share flagged, the AUROC
        against validation, the share the gate refused, the feature distance's AUROC alone, and
        the share the fallback (gate and energy score) would flag.
    """
    rows = {
        kind: {
            "group": r["group"],
            "n": r["n"],
            "flagged": r["flagged"],
            "AUROC": r["auroc"],
            "gate": r["gate"],
            "feature AUROC": r["feature_auroc"],
            "energy flagged": r["energy_flagged"],
        }
        for kind, r in guard["kinds"].items()
    }
    for group, r in guard["groups"].items():
        rows[f"all {group}"] = {
            "group": group,
            "n": r["n"],
            "flagged": r["flagged"],
            "AUROC": r["auroc"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")
