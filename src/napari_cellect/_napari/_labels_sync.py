"""Keep a label volume whose values are track ids in step with the graph.

An edit can change the track id of many nodes (breaking a link gives the rest of the branch a
new id), and every such node's voxels must take the new value. Scanning whole frames for each
would cost seconds on large volumes, so each frame's label bounding boxes are found once
(``scipy.ndimage.find_objects``, on first use of that frame) and kept up to date; a relabel
then touches only the box of the label it changes.

Deleting a node clears its voxels but keeps them aside, so undoing the delete (which re-adds a
node with the same id, frame and position) paints them back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Box = tuple[slice, ...]


@dataclass
class _Stashed:
    t: int
    position: tuple[float, ...]
    voxels: tuple[np.ndarray, ...]  # absolute indices within the frame


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


class LabelsSync:
    """Relabels a (T, ...) integer array in place, frame by frame, using cached label boxes."""

    def __init__(self, labels: np.ndarray):
        self.labels = labels
        self._boxes: dict[int, dict[int, Box]] = {}
        self._stash: dict[int, _Stashed] = {}

    def forget_boxes(self) -> None:
        """Drop the cached boxes (the array was changed by someone else, e.g. painted)."""
        self._boxes.clear()

    def _frame_boxes(self, t: int) -> dict[int, Box]:
        boxes = self._boxes.get(t)
        if boxes is None:
            frame = np.asarray(self.labels[t])
            found = ndimage.find_objects(frame) if frame.any() else []
            boxes = {i + 1: box for i, box in enumerate(found) if box is not None}
            self._boxes[t] = boxes
        return boxes

    def _fit_dtype(self, values: np.ndarray) -> None:
        """Widen the array when a new label does not fit its dtype."""
        if len(values) == 0 or self.labels.dtype.kind not in "ui":
            return
        if int(values.max()) > np.iinfo(self.labels.dtype).max:
            self.labels = self.labels.astype(np.uint32 if values.max() < 2**32 else np.uint64)

    def relabel(self, t: np.ndarray, old: np.ndarray, new: np.ndarray) -> set[int]:
        """Give the voxels of label ``old[i]`` in frame ``t[i]`` the value ``new[i]``.

        All changes of a frame are read before any is written, so swaps are safe. Returns the
        frames that changed.
        """
        t, old, new = (np.asarray(a, dtype=np.int64) for a in (t, old, new))
        keep = (old != new) & (old > 0) & (t >= 0) & (t < len(self.labels))
        t, old, new = t[keep], old[keep], new[keep]
        self._fit_dtype(new)
        touched: set[int] = set()
        for frame_t in np.unique(t):
            sel = t == frame_t
            boxes = self._frame_boxes(int(frame_t))
            frame = self.labels[int(frame_t)]
            writes = []
            for o, n in zip(old[sel], new[sel], strict=True):
                box = boxes.get(int(o))
                if box is None:
                    continue
                writes.append((box, frame[box] == o, int(n), int(o)))
            moved: dict[int, Box | None] = {}
            for box, mask, n, o in writes:
                frame[box][mask] = n
                moved[n] = _union(moved.get(n), box)
                boxes.pop(o, None)
            for n, box in moved.items():
                boxes[n] = _union(boxes.get(n), box)  # type: ignore[assignment]
            if writes:
                touched.add(int(frame_t))
        return touched

    def erase(
        self, node_ids: np.ndarray, t: np.ndarray, values: np.ndarray, positions: np.ndarray
    ) -> set[int]:
        """Clear the voxels of deleted nodes (label ``values[i]`` in frame ``t[i]``); keep them."""
        touched: set[int] = set()
        for node, frame_t, value, pos in zip(node_ids, t, values, positions, strict=True):
            if not 0 <= frame_t < len(self.labels) or value <= 0:
                continue
            boxes = self._frame_boxes(int(frame_t))
            box = boxes.pop(int(value), None)
            if box is None:
                continue
            frame = self.labels[int(frame_t)]
            local = np.nonzero(frame[box] == value)
            voxels = tuple(idx + s.start for idx, s in zip(local, box, strict=True))
            frame[voxels] = 0
            self._stash[int(node)] = _Stashed(int(frame_t), tuple(np.round(pos, 6)), voxels)
            touched.add(int(frame_t))
        return touched

    def restore(
        self, node_ids: np.ndarray, t: np.ndarray, values: np.ndarray, positions: np.ndarray
    ) -> set[int]:
        """Paint back the voxels of re-added nodes erased with the same frame and place."""
        touched: set[int] = set()
        self._fit_dtype(np.asarray(values))
        for node, frame_t, value, pos in zip(node_ids, t, values, positions, strict=True):
            stashed = self._stash.get(int(node))
            same_place = stashed is not None and stashed.position == tuple(np.round(pos, 6))
            if stashed is None or stashed.t != frame_t or not same_place:
                continue
            del self._stash[int(node)]
            frame = self.labels[int(frame_t)]
            free = frame[stashed.voxels] == 0
            voxels = tuple(v[free] for v in stashed.voxels)
            if len(voxels[0]) == 0:
                continue
            frame[voxels] = value
            box = tuple(slice(int(v.min()), int(v.max()) + 1) for v in voxels)
            boxes = self._frame_boxes(int(frame_t))
            boxes[int(value)] = _union(boxes.get(int(value)), box)  # type: ignore[assignment]
            touched.add(int(frame_t))
        return touched
