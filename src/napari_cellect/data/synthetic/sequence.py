"""A simulated sequence with its ground truth (:func:`simulate`), rendered frame by frame
(:func:`iter_frames`) or all at once (:func:`generate`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from napari_cellect.data.synthetic.config import SyntheticConfig
from napari_cellect.data.synthetic.render import Renderer
from napari_cellect.data.synthetic.simulation import FrameCells, Simulator
from napari_cellect.errors import InputError
from napari_cellect.track.graph import TrackGraph

logger = logging.getLogger(__name__)

#: ground-truth table columns, in the order of our CSV format
GT_COLUMNS = ("id", "t", "z", "y", "x", "parent_id", "radius", "division_score", "approved")


def ground_truth(config: SyntheticConfig, frames: list[FrameCells]) -> pd.DataFrame:
    """The GT table; fills each frame's ``node_id``. Only centres inside the volume are nodes."""
    upper = np.array(config.shape, dtype=float) - 1
    columns: dict[str, list[np.ndarray]] = {name: [] for name in GT_COLUMNS}
    uid_node_prev: dict[int, int] = {}
    next_id = 1
    divides_ids: list[np.ndarray] = []
    for t, frame in enumerate(frames):
        pos = frame.position
        visible = frame.tracked & np.all((pos >= 0) & (pos <= upper[None, :]), axis=1)
        rows = np.flatnonzero(visible)
        ids = np.arange(next_id, next_id + len(rows), dtype=np.int64)
        next_id += len(rows)
        frame.node_id[rows] = ids
        parents = np.empty(len(rows), dtype=np.int64)
        for k, row in enumerate(rows):
            parent = uid_node_prev.get(int(frame.uid[row]), -1)
            if parent < 0 and frame.mother[row] >= 0:
                parent = uid_node_prev.get(int(frame.mother[row]), -1)
            parents[k] = parent
        uid_node_prev = {int(u): int(i) for u, i in zip(frame.uid[rows], ids, strict=True)}
        columns["id"].append(ids)
        columns["t"].append(np.full(len(rows), t, dtype=np.int64))
        columns["z"].append(pos[rows, 0])
        columns["y"].append(pos[rows, 1])
        columns["x"].append(pos[rows, 2])
        columns["parent_id"].append(parents)
        columns["radius"].append(frame.radius[rows].astype(np.float32))
        columns["division_score"].append(np.zeros(len(rows), dtype=np.float32))
        columns["approved"].append(np.ones(len(rows), dtype=bool))
        divides_ids.append(ids[frame.divides[rows]])
    table = pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
    # a mother is scored only when both daughters are nodes (a daughter may start outside)
    parents = table["parent_id"].to_numpy()
    counts = pd.Series(parents[parents >= 0]).value_counts()
    mothers = np.concatenate(divides_ids) if divides_ids else np.empty(0, np.int64)
    two = counts.reindex(mothers).fillna(0).to_numpy() == 2
    table.loc[table["id"].isin(mothers[two]), "division_score"] = np.float32(1.0)
    return table


class Simulation:
    """A simulated sequence: all cell states and the ground truth; frames render on demand.

    Use :func:`simulate` to build one. Rendering frame ``t`` alone gives the same pixels as
    rendering the whole sequence.
    """

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        simulator = Simulator(config)
        self.geometry = simulator.geometry
        cells = simulator.initial()
        frames = [simulator.snapshot(cells)]
        for _ in range(1, config.frames):
            cells = simulator.step(cells)
            frames.append(simulator.snapshot(cells))
        self.frames: list[FrameCells] = frames
        #: ground-truth table (columns :data:`GT_COLUMNS`), one row per nucleus per frame
        self.tracks: pd.DataFrame = ground_truth(config, frames)
        self._renderer = Renderer(config, self.geometry)
        logger.debug(
            "simulated %d frames: %d nodes, %d divisions",
            config.frames,
            len(self.tracks),
            int(self.tracks["division_score"].sum()),
        )

    @cached_property
    def graph(self) -> TrackGraph:
        """The ground truth as a TrackGraph."""
        return TrackGraph.from_dataframe(self.tracks)

    @cached_property
    def _track_of_node(self) -> dict[str, np.ndarray]:
        graph = self.graph
        order = np.argsort(graph.ids)
        return {"ids": graph.ids[order], "tracks": graph.track_ids()[order]}

    def label_values(self, t: int) -> np.ndarray:
        """Track id (the CTC label) of every cell in frame ``t``; 0 for cells that are no node."""
        nodes = self.frames[t].node_id
        out = np.zeros(len(nodes), dtype=np.int64)
        known = nodes >= 0
        if np.any(known):
            lookup = self._track_of_node
            out[known] = lookup["tracks"][np.searchsorted(lookup["ids"], nodes[known])]
        return out

    def render(self, t: int, labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``t`` as (image (Z, Y, X) uint16, labels or None). Labels hold each node's
        track id on the voxels of its nucleus (before blur); nuclei that are no node are 0."""
        if not 0 <= t < self.config.frames:
            raise InputError(f"frame index must be in [0, {self.config.frames - 1}], found {t}")
        values = self.label_values(t) if labels else None
        return self._renderer.render(t, self.frames[t], values)

    def iter_frames(self, labels: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``render(t, labels)`` for every frame, one at a time."""
        for t in range(self.config.frames):
            yield self.render(t, labels)


def simulate(config: SyntheticConfig) -> Simulation:
    """Run the cell simulation of ``config`` (positions, divisions, appearance, ground truth)."""
    return Simulation(config)


def iter_frames(config: SyntheticConfig) -> Iterator[np.ndarray]:
    """Yield the frames (Z, Y, X) uint16 of ``config`` one at a time (for large sequences)."""
    for image, _ in simulate(config).iter_frames():
        yield image


@dataclass
class SyntheticSequence:
    """A fully rendered synthetic sequence with its ground truth."""

    config: SyntheticConfig
    #: (T, Z, Y, X) uint16
    images: np.ndarray
    #: ground-truth table, columns :data:`GT_COLUMNS`
    tracks: pd.DataFrame
    #: (T, Z, Y, X) track-id masks when requested, else None
    labels: np.ndarray | None = None

    @cached_property
    def graph(self) -> TrackGraph:
        """The ground truth as a TrackGraph."""
        return TrackGraph.from_dataframe(self.tracks)


def generate(config: SyntheticConfig, labels: bool = False) -> SyntheticSequence:
    """Simulate and render the whole sequence in memory (use :func:`iter_frames` or
    :func:`write_synthetic` for sequences that do not fit)."""
    sim = simulate(config)
    images = np.empty((config.frames, *config.shape), np.uint16)
    masks = None
    for t, (image, mask) in enumerate(sim.iter_frames(labels)):
        images[t] = image
        if mask is not None:
            if masks is None:
                masks = np.zeros((config.frames, *config.shape), mask.dtype)
            masks[t] = mask
    return SyntheticSequence(config, images, sim.tracks, masks)
