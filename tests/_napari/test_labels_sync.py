"""LabelsSync: relabel inside cached boxes, swaps, erase and restore (pure numpy)."""

from __future__ import annotations

import numpy as np

from napari_cellect._napari._labels_sync import LabelsSync


def volume() -> np.ndarray:
    labels = np.zeros((2, 1, 10, 10), dtype=np.uint16)
    labels[0, 0, 1:3, 1:3] = 5
    labels[0, 0, 6:9, 6:9] = 7
    labels[1, 0, 1:3, 1:3] = 5
    return labels


def test_relabel_changes_only_that_label_in_that_frame():
    labels = volume()
    sync = LabelsSync(labels)
    touched = sync.relabel(np.array([0]), np.array([5]), np.array([9]))
    assert touched == {0}
    assert set(np.unique(labels[0])) == {0, 7, 9} and set(np.unique(labels[1])) == {0, 5}
    sync.relabel(np.array([0]), np.array([9]), np.array([5]))  # cached boxes follow the label
    np.testing.assert_array_equal(labels, volume())


def test_swapping_two_labels_in_one_frame():
    labels = volume()
    LabelsSync(labels).relabel(np.array([0, 0]), np.array([5, 7]), np.array([7, 5]))
    assert labels[0, 0, 1, 1] == 7 and labels[0, 0, 7, 7] == 5


def test_a_label_too_large_for_the_dtype_widens_the_array():
    sync = LabelsSync(volume())
    sync.relabel(np.array([1]), np.array([5]), np.array([70000]))
    assert sync.labels.dtype == np.uint32 and sync.labels[1, 0, 1, 1] == 70000


def test_erase_then_restore_paints_the_same_voxels_back():
    labels = volume()
    sync = LabelsSync(labels)
    sync.erase(np.array([42]), np.array([0]), np.array([7]), np.array([[0.0, 7.0, 7.0]]))
    assert 7 not in labels[0]
    # a node that re-uses the id somewhere else gets nothing
    sync.restore(np.array([42]), np.array([0]), np.array([7]), np.array([[0.0, 1.0, 1.0]]))
    assert 7 not in labels[0]
    # the node itself coming back (undo) gets its voxels, with its current track id
    sync.restore(np.array([42]), np.array([0]), np.array([8]), np.array([[0.0, 7.0, 7.0]]))
    assert np.count_nonzero(labels[0] == 8) == 9
    sync.relabel(np.array([0]), np.array([8]), np.array([7]))  # and its box is known again
    np.testing.assert_array_equal(labels, volume())
