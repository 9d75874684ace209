"""The JSON Schemas of an evaluation block (metrics.json's per-split entries) and of the
out-of-distribution record (``evaluate.ood``), and their checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jsonschema

__all__ = ["METRICS_SCHEMA", "OOD_SCHEMA", "validate_metrics_block", "validate_ood_record"]

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}
_UNIT_OR_NULL = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_INTERVAL_METHODS = ("bootstrap", "cluster_bootstrap", "clopper_pearson")
"""The values of the "method" key of a block's intervals (see
:func:`~brainmri.evaluation.evaluate_split`)."""


def _obj(
    properties: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A closed JSON-Schema object: the properties all required, the optional ones allowed."""
    return {
        "type": "object",
        "properties": {**properties, **(optional or {})},
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


_AVERAGES = _obj({"precision": _UNIT, "recall": _UNIT, "specificity": _UNIT, "f1": _UNIT})
_CALIBRATION_CORE = {
    "ece": _UNIT,
    "brier": {"type": "number", "minimum": 0, "maximum": 2},
    "nll": {"type": "number", "minimum": 0},
    "reliability": _obj(
        {
            "n_bins": {"type": "integer", "minimum": 1},
            "bin_edges": {"type": "array", "items": _UNIT, "minItems": 2},
            "bin_centers": {"type": "array", "items": _UNIT, "minItems": 1},
            "accuracy": {"type": "array", "items": _UNIT_OR_NULL, "minItems": 1},
            "confidence": {"type": "array", "items": _UNIT_OR_NULL, "minItems": 1},
            "count": {"type": "array", "items": _COUNT, "minItems": 1},
            "ece": _UNIT,
        }
    ),
}

METRICS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://brainmri.local/schemas/evaluation-block.json",
    "title": "Evaluation block of one held-out split (brainmri.evaluation.evaluate_split)",
    "$defs": {
        # method, successes, n and clusters are optional: blocks written before they existed
        # hold point/low/high alone.
        "interval": _obj(
            {"point": _NUM_OR_NULL, "low": _NUM_OR_NULL, "high": _NUM_OR_NULL},
            {
                "method": {"enum": list(_INTERVAL_METHODS)},
                "successes": _COUNT,
                "n": _COUNT,
                "clusters": _COUNT,
            },
        ),
        "class_metrics": _obj(
            {
                "precision": _UNIT,
                "recall": _UNIT,
                "specificity": _UNIT_OR_NULL,
                "f1": _UNIT,
                "support": _COUNT,
                "roc_auc": _UNIT_OR_NULL,
                "average_precision": _UNIT_OR_NULL,
            }
        ),
        "matrix": {
            "type": "array",
            "minItems": 2,
            "items": {"type": "array", "minItems": 2, "items": _NUM},
        },
    },
    **_obj(
        {
            "summary": _obj(
                {
                    "n": {"type": "integer", "minimum": 1},
                    "accuracy": _UNIT,
                    "per_class": {
                        "type": "object",
                        "minProperties": 2,
                        "additionalProperties": {"$ref": "#/$defs/class_metrics"},
                    },
                    "macro": _AVERAGES,
                    "weighted": _AVERAGES,
                    "cohen_kappa": {"type": ["number", "null"], "minimum": -1, "maximum": 1},
                    "mcc": {"type": ["number", "null"], "minimum": -1, "maximum": 1},
                    "confusion_matrix": {
                        "$ref": "#/$defs/matrix",
                        "items": {"items": {"type": "integer", "minimum": 0}},
                    },
                    "confusion_matrix_normalized": {
                        "$ref": "#/$defs/matrix",
                        "items": {"items": _UNIT},
                    },
                }
            ),
            "ci": {
                "type": "object",
                "required": ["accuracy", "macro_f1"],
                "propertyNames": {"pattern": "^(accuracy|macro_f1|sensitivity/.+|specificity/.+)$"},
                "additionalProperties": {"$ref": "#/$defs/interval"},
            },
            "bootstrap": _obj(
                {
                    "n_resamples": {"type": "integer", "minimum": 1},
                    "seed": {"type": "integer"},
                    "level": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "unit": {"enum": ["image", "near-copy cluster"]},
                    "clusters": {"type": "integer", "minimum": 1},
                }
            ),
            "calibration": _obj(
                {
                    **_CALIBRATION_CORE,
                    "temperature": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    "scaled": {"oneOf": [{"type": "null"}, _obj(_CALIBRATION_CORE)]},
                }
            ),
            "misclassified": {
                "type": "array",
                "items": _obj(
                    {
                        "path": {"type": "string"},
                        "true": {"type": "string"},
                        "predicted": {"type": "string"},
                        "confidence": _UNIT,
                    }
                ),
            },
        }
    ),
}
"""JSON Schema (draft 2020-12) of the block evaluate_split returns; nulls mark undefined values."""


_GATE_BOUND = {"type": "object", "additionalProperties": _NUM}
_OOD_KIND = _obj(
    {
        "group": {"enum": ["far", "near", "stress"]},
        "n": _COUNT,
        "flagged": _UNIT,
        "auroc": _UNIT,
        "gate": _UNIT,
        "feature_auroc": _UNIT,
        "energy_flagged": _UNIT,
        "energy_auroc": _UNIT,
    }
)
_OOD_GROUP = _obj({"n": _COUNT, "flagged": _UNIT_OR_NULL, "auroc": _UNIT_OR_NULL})

OOD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://brainmri.local/schemas/ood-record.json",
    "title": "The out-of-distribution record of 04_evaluate (metrics.json: evaluate.ood)",
    **_obj(
        {
            "score": {"const": "energy"},
            "keep": _UNIT,
            "threshold": _NUM,
            "flagged": {"type": "object", "additionalProperties": _UNIT},
        },
        {
            # absent in runs before the guard (issue 35): the energy layer alone
            "guard": _obj(
                {
                    "method": {"enum": ["mahalanobis", "knn"]},
                    "k": _COUNT,
                    "threshold": _NUM,
                    "keep": _UNIT,
                    "gate": _obj(
                        {
                            "low": _GATE_BOUND,
                            "high": _GATE_BOUND,
                            "quantile": _UNIT,
                            "n_images": _COUNT,
                        }
                    ),
                    "validation": _obj({"n": _COUNT, "kept": _UNIT, "refused_by_gate": _UNIT}),
                    "kinds": {"type": "object", "additionalProperties": _OOD_KIND},
                    "groups": {"type": "object", "additionalProperties": _OOD_GROUP},
                },
                {
                    "headline_test": _obj({"n": _COUNT, "flagged": _UNIT}),
                    "file": _obj(
                        {
                            "name": {"type": "string"},
                            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        }
                    ),
                },
            )
        },
    ),
}
"""JSON Schema (draft 2020-12) of ``evaluate.ood``: the energy layer's threshold and flagged
shares, and the guard (``brainmri.ood.measure_guard``): its method, feature threshold, gate
bounds, validation kept, headline test flagged, and per probe kind and group the share flagged
and the AUROC against validation."""


def _non_finite_paths(obj: Any, where: str = "") -> list[tuple[str, float]]:
    """Paths of NaN/inf floats, which JSON Schema counts as numbers but JSON cannot hold."""
    if isinstance(obj, Mapping):
        return [hit for k, v in obj.items() for hit in _non_finite_paths(v, f"{where}/{k}")]
    if isinstance(obj, list | tuple):
        return [hit for i, v in enumerate(obj) for hit in _non_finite_paths(v, f"{where}/{i}")]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [(where or "/", obj)]
    return []


def validate_metrics_block(block: Mapping[str, Any]) -> None:
    """Raise ValueError naming the failing path if block does not match METRICS_SCHEMA."""
    _validate(block, METRICS_SCHEMA, "METRICS_SCHEMA", "metrics block")


def validate_ood_record(record: Mapping[str, Any]) -> None:
    """Raise ValueError naming the failing path if record does not match OOD_SCHEMA."""
    _validate(record, OOD_SCHEMA, "OOD_SCHEMA", "ood record")


def _validate(block: Mapping[str, Any], schema: Mapping[str, Any], name: str, what: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(block), key=lambda e: list(map(str, e.absolute_path)))
    lines = [
        f"at {where}: non-finite number {value} (undefined values must be null)"
        for where, value in _non_finite_paths(block)
    ]
    for err in errors:
        lines.append(f"at /{'/'.join(str(part) for part in err.absolute_path)}: {err.message}")
    if not lines:
        return
    shown = "\n  ".join(lines[:5])
    more = f"\n  ... and {len(lines) - 5} more" if len(lines) > 5 else ""
    raise ValueError(f"{what} does not match {name} ({len(lines)} problem(s)):\n  {shown}{more}")
