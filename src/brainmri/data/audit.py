"""Duplicate audit: exact copies (same bytes) and near copies (perceptual hashes) as clusters.

audit_duplicates adds the cluster columns to a manifest; audit_summary counts what they mean
for the official split: copies within a split, Testing images also in Training, and clusters
whose copies carry different labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.data.manifest import SCAN_COLUMNS, _require_columns
from brainmri.data.splits import SUBSET_COLUMNS

AUDIT_COLUMNS: tuple[str, ...] = ("exact_group", "near_group", "label_conflict")
"""Columns added by audit_duplicates."""

_TRAIN, _TEST = SPLITS
_EXAMPLE_PAIRS = 12
_HASH_CHUNK = 256  # rows per block of the pairwise Hamming computation (bounds memory)


def _cluster_ids(components: np.ndarray) -> np.ndarray:
    """Renumber component labels: multi-member ones 0.. in order of appearance, singletons -1."""
    _, first, inverse, counts = np.unique(
        components, return_index=True, return_inverse=True, return_counts=True
    )
    multi = np.flatnonzero(counts > 1)
    new = np.full(len(counts), -1, dtype=np.int64)
    new[multi[np.argsort(first[multi])]] = np.arange(len(multi))
    return new[inverse]


def _hash_ints(phashes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in phashes], dtype=np.uint64)


def _near_components(hashes: np.ndarray, start_labels: np.ndarray, distance: int) -> np.ndarray:
    """Connected components of hashes within a Hamming distance, merged with start_labels."""
    # imported here: the input pipeline imports brainmri.data for load_image only
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    rep = start_labels.astype(np.int64)  # every node points at a representative node
    for start in range(0, n, _HASH_CHUNK):
        block = hashes[start : start + _HASH_CHUNK]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(dist <= distance)
        keep = rows < cols  # each pair once; the diagonal is not an edge
        if not keep.any():
            continue
        src = np.concatenate([np.arange(n), rows[keep] + start])
        dst = np.concatenate([rep, cols[keep] + start])
        graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        _, first = np.unique(comp, return_index=True)
        rep = first[comp]
    return rep


def audit_duplicates(manifest: pd.DataFrame, *, near_distance: int) -> pd.DataFrame:
    """Add exact_group, near_group (perceptual-hash clusters) and label_conflict columns.

    Args:
        manifest: a manifest from scan_dataset; audit and subset columns it already has
            are dropped (they would be stale).
        near_distance: the largest Hamming distance (0-64) between two perceptual hashes
            that makes the images near copies; clusters are the connected components.

    Returns:
        The manifest with AUDIT_COLUMNS: cluster numbers from 0 for clusters of two or more
        "ok" files (exact copies are always in one near cluster), -1 otherwise, and whether a
        file's near cluster holds more than one label.

    Raises:
        ValueError: a SCAN_COLUMNS column is missing, or near_distance is not an integer in
            [0, 64].
    """
    _require_columns(manifest, SCAN_COLUMNS, "audit_duplicates(manifest)")
    if isinstance(near_distance, bool) or not isinstance(near_distance, int | np.integer):
        raise ValueError(f"near_distance must be an integer in [0, 64], got {near_distance!r}")
    if not 0 <= near_distance <= 64:
        raise ValueError(f"near_distance must be an integer in [0, 64], got {near_distance}")
    df = manifest.drop(columns=[c for c in (*AUDIT_COLUMNS, *SUBSET_COLUMNS) if c in manifest])
    ok = np.flatnonzero((df["status"] == "ok").to_numpy())
    exact = np.full(len(df), -1, dtype=np.int64)
    near = np.full(len(df), -1, dtype=np.int64)
    if len(ok):
        codes, _ = pd.factorize(df["sha256"].to_numpy()[ok])
        _, first = np.unique(codes, return_index=True)
        by_sha = first[codes]  # representative: first row with the same bytes
        exact[ok] = _cluster_ids(by_sha)
        hashes = _hash_ints(df["phash"].to_numpy()[ok])
        near[ok] = _cluster_ids(_near_components(hashes, by_sha, int(near_distance)))
    df["exact_group"], df["near_group"] = exact, near
    labels_per_group = df[near >= 0].groupby("near_group")["label"].nunique()
    conflicted = labels_per_group.index[labels_per_group > 1]
    df["label_conflict"] = (near >= 0) & df["near_group"].isin(conflicted).to_numpy()
    return df


def _per_class(rows: pd.DataFrame) -> dict[str, Any]:
    counts = rows["label"].value_counts()
    return {"total": len(rows), "per_class": {c: int(counts.get(c, 0)) for c in CLASS_NAMES}}


def _example_pairs(ok: pd.DataFrame) -> list[tuple[str, str, int]]:
    """Up to 12 (path_a, path_b, distance) pairs: label conflicts, near and exact, in turn."""
    kinds: dict[str, list[tuple[tuple[int, ...], tuple[str, str, int]]]] = {
        "conflict": [],
        "near": [],
        "exact": [],
    }
    for group, members in ok[ok["near_group"] >= 0].groupby("near_group", sort=True):
        members = members.iloc[:50]  # bounds the pairwise table for a giant cluster
        hashes = _hash_ints(members["phash"].tolist())
        dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int64)
        split, label = members["split"].to_numpy(), members["label"].to_numpy()
        cross = (split[:, None] == _TRAIN) & (split[None, :] == _TEST)
        allowed = cross if cross.any() else np.triu(np.ones(dist.shape, dtype=bool), 1)
        exact = members["exact_group"].to_numpy()
        same_bytes = (exact[:, None] == exact[None, :]) & (exact[:, None] >= 0)
        conflict = allowed & (label[:, None] != label[None, :])
        near = allowed & ~same_bytes
        # the closest pair of the wanted kind: a cluster's loosest pair may only be chained
        chosen = conflict if conflict.any() else near if near.any() else allowed
        i, j = np.unravel_index(np.argmin(np.where(chosen, dist, 65)), dist.shape)
        pair = (str(members["path"].iloc[i]), str(members["path"].iloc[j]), int(dist[i, j]))
        if conflict.any():
            kinds["conflict"].append(((pair[2], int(group)), pair))
        elif near.any():
            kinds["near"].append(((-pair[2], int(group)), pair))
        else:
            kinds["exact"].append(((int(group),), pair))
    queues = [[pair for _, pair in sorted(found)] for found in kinds.values()]
    pairs: list[tuple[str, str, int]] = []
    while len(pairs) < _EXAMPLE_PAIRS and any(queues):
        for queue in queues:
            if queue and len(pairs) < _EXAMPLE_PAIRS:
                pairs.append(queue.pop(0))
    return pairs


def audit_summary(manifest: pd.DataFrame) -> dict[str, Any]:
    """Counts of duplicates within and across splits per class, conflicts and example pairs.

    "Duplicates within a split" are the copies beyond the first of each cluster (what dedup
    drops); "test_in_training" counts Testing images sharing a cluster with a Training image.

    Args:
        manifest: a manifest from audit_duplicates.

    Returns:
        A JSON-ready dict: "images" (total, ok, excluded), "per_split", "within_training",
        "within_testing" and "test_in_training" (each {"exact", "near"} of {"total",
        "per_class"}), "label_conflict_clusters" ({"exact", "near"}) and "example_pairs"
        (up to 12 (path_a, path_b, Hamming distance), a label conflict, a near copy and an
        exact copy in turn).

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
    scopes["test_in_training"] = {}
    for kind, column in (("exact", "exact_group"), ("near", "near_group")):
        grouped = ok[ok[column] >= 0]
        for scope, split in (("within_training", _TRAIN), ("within_testing", _TEST)):
            rows = grouped[grouped["split"] == split]
            scopes[scope][kind] = _per_class(rows[rows.duplicated(column)])
        train_groups = grouped.loc[grouped["split"] == _TRAIN, column].unique()
        test = grouped[grouped["split"] == _TEST]
        scopes["test_in_training"][kind] = _per_class(test[test[column].isin(train_groups)])
    summary.update(scopes)
    summary["label_conflict_clusters"] = {
        kind: int((ok[ok[col] >= 0].groupby(col)["label"].nunique() > 1).sum())
        for kind, col in (("exact", "exact_group"), ("near", "near_group"))
    }
    summary["example_pairs"] = _example_pairs(ok)
    return summary
