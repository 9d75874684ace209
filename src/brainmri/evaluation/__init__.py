"""Held-out evaluation: discrimination, bootstrap and exact CIs, calibration, errors, comparisons.

Submodules, in the order an evaluation uses them:

- `calibration`: softmax, the temperature fitted on validation (fit_temperature), the top-label
  reliability curve and ECE, Brier score and NLL.
- `classification`: summary metrics of one split (accuracy, per class and averaged, kappa, MCC,
  confusion matrices), one-vs-rest ROC/PR curves and the error lists (error_analysis).
- `intervals`: the percentile bootstrap (bootstrap_ci; a cluster bootstrap with near-copy
  groups), Wilson and Clopper-Pearson intervals, and the choice of the exact interval where the
  bootstrap degenerates or counts are small.
- `schema`: the JSON Schemas of an evaluation block (METRICS_SCHEMA) and of the OOD record
  (OOD_SCHEMA), validate_metrics_block and validate_ood_record.
- `split`: evaluate_split, one split's block from the modules above, checked against the schema.
- `paired`: two models on the same images, McNemar's exact test (mcnemar_test,
  paired_comparison).
- `_checks`: the input checks the modules share, and values made fit for JSON.

The tables of these blocks for readers and the comparison of two runs are in
`brainmri.reports.tables`: this package computes, it lays nothing out.
"""

from brainmri.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_curve,
    softmax,
)
from brainmri.evaluation.classification import (
    classification_summary,
    error_analysis,
    roc_pr_curves,
)
from brainmri.evaluation.intervals import (
    bootstrap_ci,
    clopper_pearson_interval,
    wilson_interval,
)
from brainmri.evaluation.paired import mcnemar_test, paired_comparison
from brainmri.evaluation.schema import (
    METRICS_SCHEMA,
    OOD_SCHEMA,
    validate_metrics_block,
    validate_ood_record,
)
from brainmri.evaluation.split import evaluate_split

__all__ = [
    "METRICS_SCHEMA",
    "OOD_SCHEMA",
    "bootstrap_ci",
    "brier_score",
    "classification_summary",
    "clopper_pearson_interval",
    "error_analysis",
    "evaluate_split",
    "expected_calibration_error",
    "fit_temperature",
    "mcnemar_test",
    "nll",
    "paired_comparison",
    "reliability_curve",
    "roc_pr_curves",
    "softmax",
    "validate_metrics_block",
    "validate_ood_record",
    "wilson_interval",
]
