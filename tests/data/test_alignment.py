"""Aligned comparison: a tilted, re-scaled, re-contrasted copy registers onto its original and
another head does not; each group is registered against its nearest other groups only."""

from __future__ import annotations

import cv2
import numpy as np

from brainmri.data import alignment, brain_box

from .conftest import _head


def _prepared(grey: np.ndarray) -> np.ndarray:
    return alignment.head_image(grey, brain_box(grey, threshold=None))


def _tilted(grey: np.ndarray, degrees: float, scale: float, gamma: float) -> np.ndarray:
    turn = cv2.getRotationMatrix2D((grey.shape[1] / 2, grey.shape[0] / 2), degrees, scale)
    out = cv2.warpAffine(grey, turn, grey.shape[::-1], flags=cv2.INTER_CUBIC)
    return (255 * (out / 255.0) ** gamma).astype(np.uint8)


def test_a_tilted_recontrasted_copy_registers_and_another_head_does_not():
    original = _head(11, size=128)
    copy = _prepared(_tilted(original, 12, 1.06, 0.6))
    mirrored_copy = _prepared(_tilted(original[:, ::-1], -10, 0.95, 1.5))
    head = _prepared(original)
    threshold = alignment.ALIGNED_MIN_CORRELATION
    assert alignment.aligned_correlation(head, copy) >= threshold
    assert alignment.aligned_correlation(head, mirrored_copy) >= threshold  # in any orientation
    others = [alignment.aligned_correlation(head, _prepared(_head(s, size=128))) for s in (12, 13)]
    assert max(others) < threshold - 0.1
    # unregistered, the copy is further off than the threshold: registration is what finds it
    flat = [x.astype(np.float32).ravel() for x in (head, copy)]
    assert np.corrcoef(*flat)[0, 1] < threshold


def test_a_flat_image_scores_without_registration():
    flat = np.zeros((alignment.HEAD_SIZE, alignment.HEAD_SIZE), np.uint8)
    assert alignment.aligned_correlation(flat, flat) == 0.0


def test_candidates_are_each_groups_nearest_other_groups_by_their_closest_pair():
    # groups {0, 1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}; pairs (i, j, best thumbnail correlation)
    groups = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7])
    pairs = [(0, 1, 0.99), (1, 2, 0.90), (1, 3, 0.85), (0, 4, 0.84), (0, 5, 0.82)]
    pairs += [(5, 6, 0.95), (5, 7, 0.94), (5, 8, 0.93), (2, 3, 0.83)]
    first, second, best = (np.array(column) for column in zip(*pairs, strict=True))
    i, j = alignment.candidate_pairs(first, second, best, groups)
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert (0, 1) not in found  # within a group: already one
    # group 0's three nearest: 1 via (1, 2), 2 via (1, 3), 3 via (0, 4); (0, 5) is its fourth
    # and image 5's group has three nearer neighbours of its own
    assert {(1, 2), (1, 3), (0, 4), (5, 6), (5, 7), (5, 8), (2, 3)} == found
    empty = alignment.candidate_pairs(first[:0], second[:0], best[:0], groups)
    assert len(empty[0]) == 0
