"""Copy audit: every pair of images that are one picture, as they are, mirrored, upside down or
re-cropped.

The Kaggle "Brain Tumor MRI Dataset" holds many scans several times: byte for byte, re-encoded or
with another contrast, **mirrored left-right**, and cut or scaled differently. A model trained
with horizontal flips has seen a mirrored copy's very pixels, so a copy under any of these
transforms is a copy. Every pair of images is compared (no hash shortlist: a perceptual hash
misses mirrored copies and calls different pictures equal) in four views of 64x64 grey-level
thumbnails (:func:`pixel_signatures`):

- ``plain``: the whole images as they are;
- ``mirrored``: one of the two flipped left-right;
- ``flipped``: one of the two upside down, or turned 180 degrees (a review found 250 such
  copies of training images among the held-out notumor images of the first grouped split);
- ``recropped``: both cut to the square around the head (``brain_box`` at a level adapted to
  each image's contrast), in each of those four orientations, so copies cut, padded or scaled
  differently line up again.

Pairs that come close without confirming are then registered one onto the other
(:mod:`brainmri.data.alignment`): kind ``aligned`` catches copies re-scaled, turned a little or
given a non-linear contrast curve, which the fixed thumbnail grid misses.

Each view is compared twice, on the thumbnails as they are and with the background flattened to
black (copies whose margins differ in noise, JPEG ringing or a lifted floor), and the higher
correlation counts. A pair is a **copy** when the two share their bytes (``exact``) or the rank
correlation of their thumbnails in some view reaches ``min_correlation``; its kind is the first
of :data:`MATCH_KINDS` that confirms it. The correlation is of ranks, so any monotone contrast change keeps it. The
threshold was calibrated on the shared copy of the data set (02_eda shows the pairs on each side
of it, per kind): at 0.97 and above the pairs are one slice, re-encoded, mirrored or re-cut; from
about 0.93 to 0.97 they are mostly neighbouring slices of one series, patient-level similarity
rather than a copy; below that, different images.

**Copy groups** are the connected components of all copy pairs, whatever their labels: a chain
of near-copies stays together, so that no split can hold one end of it in training and the other
in evaluation (``brainmri.data.splits`` assigns whole groups). A pair whose labels differ is also
reported as a label conflict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.data import alignment
from brainmri.data.manifest import SCAN_COLUMNS, require_columns
from brainmri.data.signatures import all_views, view_correlations

AUDIT_COLUMNS: tuple[str, ...] = (
    "exact_group",
    "copy_group",
    "copy_group_size",
    "label_conflict",
    "closest_training",
    "closest_correlation",
    "closest_kind",
    "training_copy",
)
"""Columns added by audit_duplicates."""

MATCH_KINDS: tuple[str, ...] = ("exact", "plain", "mirrored", "flipped", "recropped", "aligned")
"""How a copy pair is confirmed, in the order tried: the same bytes; thumbnails that match as
they are, with one mirrored left-right, with one upside down or turned 180 degrees, or both cut
to the head (in any of those orientations); or heads that match once registered onto each other
(:mod:`brainmri.data.alignment`)."""

_TRAIN, _TEST = SPLITS
_EVIDENCE_PAIRS = 4  # pairs shown on each side of the threshold, per kind
_NEAR_MISS = 0.03  # pairs this far under the threshold are kept as evidence, not as copies
_CHUNK = 512  # rows per block of the pairwise products (bounds memory: 512 x n floats each)


def copy_pairs(
    files: Sequence[str | Path],
    *,
    min_correlation: float,
    sha256: Sequence[str] | None = None,
    aligned_correlation: float | None = alignment.ALIGNED_MIN_CORRELATION,
) -> pd.DataFrame:
    """Every pair of files that is a copy (:data:`MATCH_KINDS`), with its evidence.

    All pairs are compared, in blocks of rows against the rows after them (n^2 / 2 products
    of 4,096-long rows, eight per pair: about 45 s for the 7,019 images of the Kaggle set on 2
    cores).

    Args:
        files: the image files.
        min_correlation: the rank correlation that confirms a copy, in (0, 1].
        sha256: the files' content hashes (equal hashes are ``exact`` copies whatever their
            pixels); None compares pixels only.
        aligned_correlation: the registered correlation that confirms an ``aligned`` copy
            (:mod:`brainmri.data.alignment`); None registers nothing.

    Returns:
        One row per pair ``i < j`` (positions in ``files``) with the ``plain``, ``mirrored``,
        ``flipped`` and ``recropped`` correlations, ``aligned`` (the registered correlation, for
        the pairs registered, else NaN) and ``kind``, the first kind that confirms it, or ""
        for the near misses (within 0.03 under a threshold) kept as evidence.
    """
    views = all_views(files)
    return _pairs_from_views(views, min_correlation, sha256, aligned_correlation)


def _pairs_from_views(
    views: dict[str, np.ndarray],
    min_correlation: float,
    sha256: Sequence[str] | None,
    aligned_correlation: float | None,
) -> pd.DataFrame:
    n = len(views["whole"])
    found: list[dict[str, np.ndarray]] = []
    neighbours: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # candidates to register
    floor = min(alignment.CANDIDATE_FLOOR, min_correlation - _NEAR_MISS)
    for start in range(0, n, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, n))
        cols = np.arange(start, n)
        corr = view_correlations(views, rows, cols)
        best = np.max([corr[k] for k in _VIEWS], axis=0)
        i, j = np.nonzero(best >= floor)
        keep = rows[i] < cols[j]  # each pair once, no self-pairs
        i, j = i[keep], j[keep]
        neighbours.append((rows[i], cols[j], best[i, j]))
        close = best[i, j] >= min_correlation - _NEAR_MISS
        i, j = i[close], j[close]
        found.append({"i": rows[i], "j": cols[j], **{k: v[i, j] for k, v in corr.items()}})
    if sha256 is not None:  # byte copies count whatever their pixels (a flat image, say)
        codes, _ = pd.factorize(np.asarray(sha256))
        order = np.argsort(codes, kind="stable")
        same = np.flatnonzero(np.diff(codes[order]) == 0)
        extra_i, extra_j = order[same], order[same + 1]  # chains of equal hashes: enough
        a, b = np.minimum(extra_i, extra_j), np.maximum(extra_i, extra_j)
        if len(a):
            found.append({"i": a, "j": b, **view_correlations(views, a, b, paired=True)})
    table = pd.DataFrame(
        {k: np.concatenate([f[k] for f in found]) if found else [] for k in ("i", "j", *_VIEWS)}
    )
    table = table.astype({"i": np.int64, "j": np.int64})
    table = table.drop_duplicates(["i", "j"]).sort_values(["i", "j"]).reset_index(drop=True)
    exact = np.zeros(len(table), dtype=bool)
    if sha256 is not None and len(table):
        hashes = np.asarray(sha256)
        exact = hashes[table["i"]] == hashes[table["j"]]
    kind = np.select(
        [
            exact,
            table["plain"] >= min_correlation,
            table["mirrored"] >= min_correlation,
            table["flipped"] >= min_correlation,
            table["recropped"] >= min_correlation,
        ],
        ["exact", *_VIEWS],  # "aligned" comes after, by registration
        default="",
    )
    table["kind"] = kind
    table["aligned"] = np.nan
    if not neighbours or aligned_correlation is None:
        return table
    first, second, best = (np.concatenate(c) for c in zip(*neighbours, strict=True))
    return _register(table, views, (first, second, best), aligned_correlation)


def _register(
    table: pd.DataFrame,
    views: dict[str, np.ndarray],
    neighbours: tuple[np.ndarray, np.ndarray, np.ndarray],
    threshold: float,
) -> pd.DataFrame:
    """Add the ``aligned`` copies: each group's nearest other groups, registered (the module
    brainmri.data.alignment says why and how); pairs within 0.03 of its threshold are kept."""
    groups = copy_groups(len(views["whole"]), table[table["kind"] != ""])
    first, second = alignment.candidate_pairs(*neighbours, groups)
    value = alignment.aligned_correlations(views["heads"], first, second)
    close = value >= threshold - _NEAR_MISS
    found = pd.DataFrame({"i": first[close], "j": second[close], "registered": value[close]})
    table = table.merge(found, on=["i", "j"], how="outer")
    table["aligned"] = table.pop("registered").astype(float)
    new = table["kind"].isna().to_numpy()
    if new.any():
        a, b = table.loc[new, "i"].to_numpy(), table.loc[new, "j"].to_numpy()
        for k, v in view_correlations(views, a, b, paired=True).items():
            table.loc[new, k] = v
        table.loc[new, "kind"] = ""
    confirmed = (table["kind"] == "") & (table["aligned"] >= threshold)
    table.loc[confirmed, "kind"] = "aligned"
    return table.sort_values(["i", "j"]).reset_index(drop=True)


_VIEWS = ("plain", "mirrored", "flipped", "recropped")


def copy_groups(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Connected components of copy pairs: a group id (0..) for each of n items.

    Args:
        n: the number of items.
        pairs: a table with integer columns ``i`` and ``j`` (from :func:`copy_pairs`).

    Returns:
        n integers; two items share one exactly when a chain of copy pairs joins them.
        Groups are numbered in order of their first item.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs["i"], pairs["j"])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)  # renumber by first appearance: stable across runs
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return renumber[labels].astype(np.int64)


def audit_duplicates(
    manifest: pd.DataFrame,
    root: str | Path,
    *,
    min_correlation: float,
    aligned_correlation: float | None = alignment.ALIGNED_MIN_CORRELATION,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add the copy audit's columns (:data:`AUDIT_COLUMNS`) to a manifest.

    Args:
        manifest: a manifest from scan_dataset; audit and subset columns it already has
            are dropped (they would be stale).
        root: the data root the manifest's paths are relative to (the pixels are compared).
        min_correlation: the smallest thumbnail rank correlation that confirms a copy, in
            (0, 1].
        aligned_correlation: the registered correlation that confirms an ``aligned`` copy
            (the default was calibrated on the Kaggle set: see
            :data:`brainmri.data.alignment.ALIGNED_MIN_CORRELATION`); None registers nothing,
            so only thumbnail and byte copies count.

    Returns:
        ``(manifest, pairs)``. The manifest gains ``exact_group`` (files with the same bytes,
        numbered from 0 for groups of two or more, else -1); ``copy_group`` (the connected
        component of copy pairs of any kind and label, for every "ok" file, -1 for the
        others) and ``copy_group_size``; ``label_conflict`` (the file has a copy under another
        label); and, for Testing files, ``closest_training`` (the most similar Training file
        in any view), ``closest_correlation``, ``closest_kind`` (the view it matched in) and
        ``training_copy`` (its copy group holds a Training file). ``pairs`` lists every copy
        pair by manifest path: ``path_a``, ``path_b``, the three view correlations, ``kind``.

    Raises:
        ValueError: a SCAN_COLUMNS column is missing, min_correlation is not in (0, 1], or an
            image cannot be read.
    """
    from brainmri.data.splits import SUBSET_COLUMNS  # splits imports this module

    require_columns(manifest, SCAN_COLUMNS, "audit_duplicates(manifest)")
    if isinstance(min_correlation, bool) or not 0 < float(min_correlation) <= 1:
        raise ValueError(f"min_correlation must be in (0, 1], got {min_correlation!r}")
    stale = [c for c in (*AUDIT_COLUMNS, *SUBSET_COLUMNS, "near_group") if c in manifest]
    df = manifest.drop(columns=stale).reset_index(drop=True)
    ok = np.flatnonzero((df["status"] == "ok").to_numpy())
    n = len(ok)
    exact = np.full(len(df), -1, dtype=np.int64)
    group = np.full(len(df), -1, dtype=np.int64)
    size = np.zeros(len(df), dtype=np.int64)
    conflict = np.zeros(len(df), dtype=bool)
    closest = np.full(len(df), "", dtype=object)
    closest_corr = np.full(len(df), np.nan)
    closest_kind = np.full(len(df), "", dtype=object)
    copy = np.zeros(len(df), dtype=bool)
    empty_pairs = pd.DataFrame(columns=["path_a", "path_b", *_VIEWS, "aligned", "kind"])
    if n:
        paths = df["path"].to_numpy()[ok]
        sha = df["sha256"].to_numpy()[ok]
        codes, _ = pd.factorize(sha)
        counts = np.bincount(codes)
        multi = np.flatnonzero(counts > 1)
        exact_ids = np.full(len(counts), -1)
        exact_ids[multi] = np.arange(len(multi))
        exact[ok] = exact_ids[codes]

        views = all_views([Path(root) / p for p in paths])
        pairs = _pairs_from_views(views, float(min_correlation), sha, aligned_correlation)
        components = copy_groups(n, pairs[pairs["kind"] != ""])
        group[ok] = components
        size[ok] = np.bincount(components)[components]
        labels = df["label"].to_numpy()[ok]
        copies = pairs[pairs["kind"] != ""]
        clash = copies[labels[copies["i"]] != labels[copies["j"]]]
        conflict[ok[clash["i"]]] = True
        conflict[ok[clash["j"]]] = True

        split = df["split"].to_numpy()[ok]
        test, train = np.flatnonzero(split == _TEST), np.flatnonzero(split == _TRAIN)
        if len(test) and len(train):
            for start in range(0, len(test), _CHUNK):
                rows = test[start : start + _CHUNK]
                corr = view_correlations(views, rows, train)
                stacked = np.stack([corr[k] for k in _VIEWS])  # (view, row, train)
                flat = stacked.reshape(len(_VIEWS), -1).max(axis=0).reshape(len(rows), -1)
                best = flat.argmax(axis=1)
                at_best = stacked[:, np.arange(len(rows)), best]  # (view, row)
                closest[ok[rows]] = paths[train[best]]
                closest_corr[ok[rows]] = at_best.max(axis=0)
                # the first view that confirms the copy (as is before mirrored before re-cut),
                # else the view that came closest
                confirms = at_best >= min_correlation
                first = np.where(confirms.any(axis=0), confirms.argmax(axis=0), at_best.argmax(0))
                closest_kind[ok[rows]] = np.array(_VIEWS)[first]
            train_groups = set(components[train].tolist())
            copy[ok[test]] = np.isin(components[test], list(train_groups))
        empty_pairs = pd.DataFrame(
            {
                "path_a": paths[pairs["i"]],
                "path_b": paths[pairs["j"]],
                **{k: pairs[k].to_numpy() for k in (*_VIEWS, "aligned")},
                "kind": pairs["kind"].to_numpy(),
            }
        )
    df["exact_group"], df["copy_group"], df["copy_group_size"] = exact, group, size
    df["label_conflict"] = conflict
    df["closest_training"], df["closest_correlation"] = closest, closest_corr
    df["closest_kind"], df["training_copy"] = closest_kind, copy
    return df, empty_pairs


def _per_class(rows: pd.DataFrame) -> dict[str, Any]:
    counts = rows["label"].value_counts()
    return {"total": len(rows), "per_class": {c: int(counts.get(c, 0)) for c in CLASS_NAMES}}


def threshold_pairs(pairs: pd.DataFrame, *, min_correlation: float) -> dict[str, dict]:
    """The evidence for the threshold, per kind: pairs just above it and just below it.

    Args:
        pairs: the pairs from :func:`audit_duplicates` (copies and near misses).
        min_correlation: the threshold the audit used.

    Returns:
        ``{kind: {"threshold": t, "above": [...], "below": [...]}}`` for plain, mirrored,
        flipped, recropped and aligned, each side up to 4 ``(path_a, path_b, correlation)``
        triples, the closest to the kind's threshold first: "above", the least certain copies
        that kind confirmed first; "below", the near misses whose best view was that one (not
        copies; for ``aligned``, the registered pairs under its threshold). 02_eda shows them
        side by side.
    """
    best = pairs[list(_VIEWS)].astype(float).idxmax(axis=1) if len(pairs) else pd.Series()
    registered = pairs["aligned"].notna() if "aligned" in pairs else pd.Series(False, pairs.index)
    out: dict[str, dict] = {}
    for kind in (*_VIEWS, "aligned"):
        threshold = alignment.ALIGNED_MIN_CORRELATION if kind == "aligned" else min_correlation
        below = registered if kind == "aligned" else (best == kind) & ~registered
        sides = {"above": pairs["kind"] == kind, "below": (pairs["kind"] == "") & below}
        out[kind] = {"threshold": float(threshold)}
        for side, mask in sides.items():
            rows = pairs[mask]
            gap = (rows[kind].astype(float) - threshold).abs()
            chosen = rows.assign(gap=gap).nsmallest(_EVIDENCE_PAIRS, "gap")
            out[kind][side] = [
                (str(r.path_a), str(r.path_b), round(float(getattr(r, kind)), 4))
                for r in chosen.itertuples()
            ]
    return out


def audit_summary(
    manifest: pd.DataFrame, pairs: pd.DataFrame, *, min_correlation: float
) -> dict[str, Any]:
    """Counts of copies within and across the official splits per class, per kind, groups.

    "Copies within a split" are the files beyond the first of each copy group in that split
    (what ``dedup: near`` drops); "test_in_training" counts Testing images with an exact copy
    in Training ("exact") or whose copy group holds a Training image ("copies").

    Args:
        manifest: a manifest from audit_duplicates.
        pairs: the copy pairs from audit_duplicates.
        min_correlation: the threshold the audit used.

    Returns:
        A JSON-ready dict: "images", "per_split", "within_training", "within_testing" and
        "test_in_training" (each {"exact", "copies"} of {"total", "per_class"}),
        "testing_without_copy" ({"total", "per_class"}), "pairs_by_kind" (copy pairs each kind
        confirmed first), "test_in_training_by_kind" (Testing images whose closest Training
        copy matched in each view), "groups" (count, sizes, groups spanning both splits),
        "label_conflicts", "min_correlation" and "threshold_pairs" (:func:`threshold_pairs`).

    Raises:
        ValueError: a SCAN_COLUMNS or AUDIT_COLUMNS column is missing.
    """
    require_columns(manifest, (*SCAN_COLUMNS, *AUDIT_COLUMNS), "audit_summary(manifest)")
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
    for kind, column in (("exact", "exact_group"), ("copies", "copy_group")):
        grouped = ok[ok[column] >= 0]
        for scope, split in (("within_training", _TRAIN), ("within_testing", _TEST)):
            rows = grouped[grouped["split"] == split]
            scopes[scope][kind] = _per_class(rows[rows.duplicated(column)])
    testing = ok[ok["split"] == _TEST]
    train_sha = set(ok.loc[ok["split"] == _TRAIN, "sha256"])
    scopes["test_in_training"] = {
        "exact": _per_class(testing[testing["sha256"].isin(train_sha)]),
        "copies": _per_class(testing[testing["training_copy"]]),
    }
    summary.update(scopes)
    summary["testing_without_copy"] = _per_class(testing[~testing["training_copy"]])
    summary["pairs_by_kind"] = {k: int((pairs["kind"] == k).sum()) for k in MATCH_KINDS}
    direct = testing[testing["closest_correlation"] >= min_correlation]
    summary["test_in_training_by_kind"] = {
        k: _per_class(direct[direct["closest_kind"] == k]) for k in _VIEWS
    }
    sizes = ok.groupby("copy_group").size()
    spans = ok.groupby("copy_group")["split"].nunique()
    summary["groups"] = {
        "count": int(len(sizes)),
        "with_copies": int((sizes > 1).sum()),
        "largest": int(sizes.max()) if len(sizes) else 0,
        "sizes": {str(k): int(v) for k, v in sizes.value_counts().sort_index().items()},
        "spanning_splits": int((spans > 1).sum()),
        "distinct_per_class": {
            c: int(ok.loc[ok["label"] == c, "copy_group"].nunique()) for c in CLASS_NAMES
        },
    }
    summary["label_conflicts"] = {
        "exact": int(
            (ok[ok["exact_group"] >= 0].groupby("exact_group")["label"].nunique() > 1).sum()
        ),
        "files": int(ok["label_conflict"].sum()),
    }
    summary["min_correlation"] = float(min_correlation)
    summary["threshold_pairs"] = threshold_pairs(pairs, min_correlation=min_correlation)
    return summary
