"""Duplicate audit: exact copies (same bytes) and near copies confirmed by their pixels.

A perceptual hash alone is not evidence of a copy: on the Kaggle data set 235 pairs at Hamming
distance 0 are different pictures (mean absolute difference above 20/255), while re-encoded,
rescaled or contrast-changed copies of one slice reach distance 10. So a pair is a **near
copy** when a pixel comparison confirms it: the rank correlation of the two images' 64x64
grey-level thumbnails (:func:`pixel_signatures`; a rank correlation ignores any monotone
contrast change) is at least ``min_correlation``. Candidates are pairs whose perceptual hashes
lie within ``near_distance`` of each other; Testing is compared with every Training image
(1,311 x 5,712 correlations take about a second), so no leak hides behind a distant hash.

Clusters never chain and never mix labels: a pair of different labels is reported as a label
conflict, not merged, and two clusters merge only when every member of one is confirmed
against every member of the other (complete linkage), so a cluster's diameter is bounded by
the threshold itself.

The threshold was calibrated on the shared copy of the data set (02_eda shows the pairs just
above and below it): at 0.97 and above the pairs are one slice, re-encoded or with another
contrast; from about 0.93 to 0.97 they are mostly neighbouring slices of one series, which is
patient-level similarity rather than a copy; below that, different images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.data.images import load_image
from brainmri.data.manifest import SCAN_COLUMNS, _require_columns
from brainmri.data.splits import SUBSET_COLUMNS

AUDIT_COLUMNS: tuple[str, ...] = (
    "exact_group",
    "near_group",
    "label_conflict",
    "closest_training",
    "closest_correlation",
    "training_copy",
)
"""Columns added by audit_duplicates."""

SIGNATURE_SIZE = 64
"""Side of the grey-level thumbnails compared by :func:`pixel_signatures`, in pixels."""

_TRAIN, _TEST = SPLITS
_EVIDENCE_PAIRS = 4  # pairs shown on each side of the threshold
_CHUNK = 256  # rows per block of the pairwise computations (bounds memory)


def pixel_signatures(files: Sequence[str | Path], *, size: int = SIGNATURE_SIZE) -> np.ndarray:
    """Rank-normalised grey-level thumbnails: the dot product of two is their rank correlation.

    Args:
        files: image files (any format ``load_image`` reads).
        size: the side of the thumbnails.

    Returns:
        An array (len(files), size * size) of float32 rows with zero mean and unit norm; the
        dot product of two rows is the Spearman correlation of the two thumbnails.

    Raises:
        ValueError: a file cannot be read (the message names it).
    """
    from scipy.stats import rankdata  # imported here: the input pipeline imports this package

    out = np.zeros((len(files), size * size), dtype=np.float32)
    for i, file in enumerate(files):
        grey = cv2.cvtColor(load_image(Path(file), size), cv2.COLOR_RGB2GRAY).ravel()
        ranks = rankdata(grey).astype(np.float32)
        ranks -= ranks.mean()
        norm = np.linalg.norm(ranks)
        out[i] = ranks / norm if norm > 0 else 0.0  # a flat image correlates with nothing
    return out


def _hash_ints(phashes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in phashes], dtype=np.uint64)


def _hash_candidates(hashes: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose perceptual hashes lie within a Hamming distance."""
    rows, cols = [], []
    for start in range(0, len(hashes), _CHUNK):
        block = hashes[start : start + _CHUNK]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        i, j = np.nonzero(dist <= distance)
        keep = i < j  # the block starts at its own diagonal: each pair once, no self-pairs
        rows.append(i[keep] + start)
        cols.append(j[keep] + start)
    return np.concatenate(rows or [[]]).astype(np.int64), np.concatenate(cols or [[]]).astype(
        np.int64
    )


def _complete_linkage(
    n: int, edges: np.ndarray, strength: np.ndarray, signatures: np.ndarray, threshold: float
) -> np.ndarray:
    """Clusters of confirmed pairs where every two members are confirmed (no chaining).

    Edges are merged strongest first; two clusters join only when the weakest correlation
    between their members reaches the threshold. Returns one representative per node.
    """
    parent = np.arange(n)
    members: dict[int, list[int]] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for k in np.argsort(-strength, kind="stable"):
        a, b = find(int(edges[k, 0])), find(int(edges[k, 1]))
        if a == b:
            continue
        ma, mb = members.get(a, [a]), members.get(b, [b])
        if len(ma) * len(mb) > 1:
            weakest = float((signatures[ma] @ signatures[mb].T).min())
            if weakest < threshold:
                continue
        parent[b] = a
        members[a] = ma + mb
        members.pop(b, None)
    return np.array([find(x) for x in range(n)])


def _cluster_ids(representatives: np.ndarray) -> np.ndarray:
    """Renumber representatives: multi-member clusters 0.. in order of appearance, singles -1."""
    _, first, inverse, counts = np.unique(
        representatives, return_index=True, return_inverse=True, return_counts=True
    )
    multi = np.flatnonzero(counts > 1)
    new = np.full(len(counts), -1, dtype=np.int64)
    new[multi[np.argsort(first[multi])]] = np.arange(len(multi))
    return new[inverse]


def audit_duplicates(
    manifest: pd.DataFrame,
    root: str | Path,
    *,
    near_distance: int,
    min_correlation: float,
) -> pd.DataFrame:
    """Add the duplicate audit's columns (:data:`AUDIT_COLUMNS`) to a manifest.

    Args:
        manifest: a manifest from scan_dataset; audit and subset columns it already has
            are dropped (they would be stale).
        root: the data root the manifest's paths are relative to (the pixels are compared).
        near_distance: the largest perceptual-hash Hamming distance (0-64) of a candidate
            pair within the data set.
        min_correlation: the smallest pixel rank correlation (:func:`pixel_signatures`) that
            confirms a near copy, in (0, 1].

    Returns:
        The manifest with: ``exact_group`` (same bytes) and ``near_group`` (exact or
        confirmed near copies of one label, complete linkage), numbered from 0 for clusters of
        two or more "ok" files, else -1; ``label_conflict`` (the file has an exact or
        confirmed near copy with another label); and for Testing files ``closest_training``
        (the most similar Training file by pixels), ``closest_correlation`` and
        ``training_copy`` (that correlation confirms a copy), empty / NaN / False elsewhere.

    Raises:
        ValueError: a SCAN_COLUMNS column is missing, near_distance is not an integer in
            [0, 64], min_correlation is not in (0, 1], or an image cannot be read.
    """
    _require_columns(manifest, SCAN_COLUMNS, "audit_duplicates(manifest)")
    if isinstance(near_distance, bool) or not isinstance(near_distance, int | np.integer):
        raise ValueError(f"near_distance must be an integer in [0, 64], got {near_distance!r}")
    if not 0 <= near_distance <= 64:
        raise ValueError(f"near_distance must be an integer in [0, 64], got {near_distance}")
    if not 0 < float(min_correlation) <= 1:
        raise ValueError(f"min_correlation must be in (0, 1], got {min_correlation!r}")
    df = manifest.drop(columns=[c for c in (*AUDIT_COLUMNS, *SUBSET_COLUMNS) if c in manifest])
    df = df.reset_index(drop=True)
    ok = np.flatnonzero((df["status"] == "ok").to_numpy())
    n = len(ok)
    exact = np.full(len(df), -1, dtype=np.int64)
    near = np.full(len(df), -1, dtype=np.int64)
    conflict = np.zeros(len(df), dtype=bool)
    closest = np.full(len(df), "", dtype=object)
    closest_corr = np.full(len(df), np.nan)
    df["exact_group"], df["near_group"], df["label_conflict"] = exact, near, conflict
    df["closest_training"], df["closest_correlation"] = closest, closest_corr
    df["training_copy"] = np.zeros(len(df), dtype=bool)
    if n == 0:
        return df

    sha_codes, _ = pd.factorize(df["sha256"].to_numpy()[ok])
    _, first = np.unique(sha_codes, return_index=True)
    exact[ok] = _cluster_ids(first[sha_codes])
    signatures = pixel_signatures([Path(root) / p for p in df["path"].to_numpy()[ok]])
    labels = df["label"].to_numpy()[ok]
    split = df["split"].to_numpy()[ok]

    # Candidate pairs: close perceptual hashes, plus every Testing-Training pair.
    i, j = _hash_candidates(_hash_ints(df["phash"].to_numpy()[ok]), int(near_distance))
    pairs = [np.stack([i, j], axis=1)]
    test, train = np.flatnonzero(split == _TEST), np.flatnonzero(split == _TRAIN)
    best_corr = np.full(len(test), -np.inf)
    best_train = np.full(len(test), -1)
    for start in range(0, len(test), _CHUNK):
        rows = test[start : start + _CHUNK]
        sim = signatures[rows] @ signatures[train].T if len(train) else np.zeros((len(rows), 0))
        if sim.shape[1]:
            best_train[start : start + len(rows)] = train[sim.argmax(axis=1)]
            best_corr[start : start + len(rows)] = sim.max(axis=1)
        a, b = np.nonzero(sim >= min_correlation)
        pairs.append(np.stack([rows[a], train[b]], axis=1))
    pairs = np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0).astype(np.int64)
    strength = np.einsum("ij,ij->i", signatures[pairs[:, 0]], signatures[pairs[:, 1]])
    same_bytes = sha_codes[pairs[:, 0]] == sha_codes[pairs[:, 1]]
    confirmed = same_bytes | (strength >= min_correlation)
    same_label = labels[pairs[:, 0]] == labels[pairs[:, 1]]

    merge = confirmed & same_label
    strength = np.where(same_bytes, 2.0, strength)  # exact copies merge first
    near[ok] = _cluster_ids(
        _complete_linkage(n, pairs[merge], strength[merge], signatures, min_correlation)
    )
    clash = pairs[confirmed & ~same_label].ravel()
    conflict[ok[clash]] = True

    tested = ok[test]
    has_train = best_train >= 0
    closest[tested[has_train]] = df["path"].to_numpy()[ok[best_train[has_train]]]
    closest_corr[tested[has_train]] = best_corr[has_train]
    train_sha = set(sha_codes[train].tolist())
    copy = np.array([c in train_sha for c in sha_codes[test]]) | (best_corr >= min_correlation)
    df["exact_group"], df["near_group"], df["label_conflict"] = exact, near, conflict
    df["closest_training"], df["closest_correlation"] = closest, closest_corr
    df.loc[tested, "training_copy"] = copy
    df["training_copy"] = df["training_copy"].astype(bool)
    return df


def _per_class(rows: pd.DataFrame) -> dict[str, Any]:
    counts = rows["label"].value_counts()
    return {"total": len(rows), "per_class": {c: int(counts.get(c, 0)) for c in CLASS_NAMES}}


def threshold_pairs(manifest: pd.DataFrame, min_correlation: float) -> dict[str, list]:
    """The evidence for the threshold: Testing files and their closest Training file just
    below and just above ``min_correlation``.

    Args:
        manifest: a manifest from audit_duplicates.
        min_correlation: the threshold the audit used.

    Returns:
        ``{"below": [...], "above": [...]}``, each up to 4 ``(testing path, training path,
        correlation)`` triples, the closest to the threshold first.
    """
    rows = manifest[manifest["closest_training"].astype(str) != ""]
    corr = rows["closest_correlation"].astype(float)
    out: dict[str, list] = {}
    for side, mask in (("below", corr < min_correlation), ("above", corr >= min_correlation)):
        chosen = (
            rows[mask]
            .assign(gap=(corr[mask] - min_correlation).abs())
            .nsmallest(_EVIDENCE_PAIRS, "gap")
        )
        out[side] = [
            (str(r.path), str(r.closest_training), round(float(r.closest_correlation), 4))
            for r in chosen.itertuples()
        ]
    return out


def audit_summary(manifest: pd.DataFrame, *, min_correlation: float) -> dict[str, Any]:
    """Counts of duplicates within and across splits per class, label conflicts, evidence.

    "Duplicates within a split" are the copies beyond the first of each cluster (what dedup
    drops); "test_in_training" counts Testing images with an exact copy ("exact") or an exact
    or confirmed near copy ("near") in Training: what the leakage-free Testing split removes.

    Args:
        manifest: a manifest from audit_duplicates.
        min_correlation: the threshold the audit used (for the evidence pairs).

    Returns:
        A JSON-ready dict: "images" (total, ok, excluded), "per_split", "within_training",
        "within_testing" and "test_in_training" (each {"exact", "near"} of {"total",
        "per_class"}), "clean_testing" ({"total", "per_class"}), "label_conflicts"
        ({"exact": byte-identical files under different labels, "near": files with an exact
        or confirmed near copy under another label}), "min_correlation" (the threshold) and
        "threshold_pairs" (see :func:`threshold_pairs`).

    Raises:
        ValueError: a SCAN_COLUMNS or AUDIT_COLUMNS column is missing.
    """
    _require_columns(manifest, (*SCAN_COLUMNS, *AUDIT_COLUMNS), "audit_summary(manifest)")
    ok = manifest[manifest["status"] == "ok"]
    summary: dict[str, Any] = {
        "images": {
            "total": len(manifest),
            "ok": len(ok),
            "excluded": int((manifest["status"] != "ok").sum()),
        },
        "per_split": {s: _per_class(ok[ok["split"] == s]) for s in SPLITS},
    }
    scopes: dict[str, dict[str, Any]] = {"within_training": {}, "within_testing": {}}
    for kind, column in (("exact", "exact_group"), ("near", "near_group")):
        grouped = ok[ok[column] >= 0]
        for scope, split in (("within_training", _TRAIN), ("within_testing", _TEST)):
            rows = grouped[grouped["split"] == split]
            scopes[scope][kind] = _per_class(rows[rows.duplicated(column)])
    testing = ok[ok["split"] == _TEST]
    train_sha = set(ok.loc[ok["split"] == _TRAIN, "sha256"])
    scopes["test_in_training"] = {
        "exact": _per_class(testing[testing["sha256"].isin(train_sha)]),
        "near": _per_class(testing[testing["training_copy"]]),
    }
    summary.update(scopes)
    summary["clean_testing"] = _per_class(testing[~testing["training_copy"]])
    by_bytes = ok[ok["exact_group"] >= 0].groupby("exact_group")["label"].nunique()
    summary["label_conflicts"] = {
        "exact": int((by_bytes > 1).sum()),
        "near": int(ok["label_conflict"].sum()),
    }
    summary["min_correlation"] = float(min_correlation)
    summary["threshold_pairs"] = threshold_pairs(manifest, min_correlation)
    return summary
