"""Writing a synthetic dataset to a folder: images, our CSV, the CTC ground truth, optional
labels and ``synthetic.json``, frame by frame."""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import tifffile

from napari_cellect.data.atomic import atomic_write
from napari_cellect.data.export import write_csv, write_ctc
from napari_cellect.data.synthetic.sequence import simulate
from napari_cellect.errors import InputError
from napari_cellect.progress import Progress, run_to_end
from napari_cellect.track.graph import TrackGraph

if TYPE_CHECKING:
    from napari_cellect.data.synthetic.config import SyntheticConfig


@dataclass
class SyntheticPaths:
    """Where :func:`write_synthetic` put everything."""

    root: Path
    images: list[Path]
    tracks: Path
    ctc: Path
    metadata: Path
    labels: list[Path] = field(default_factory=list)
    #: counts of the ground truth (see :func:`summarise`)
    summary: dict[str, int] = field(default_factory=dict)


_FRAME_FILE = re.compile(r"t\d+\.tif")


def _frame_name(t: int, frames: int) -> str:
    return f"t{t:0{max(3, len(str(frames - 1)))}d}.tif"


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("expected a folder for the synthetic data, found a file", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(
            "the output folder exists and is not empty; choose another folder or allow "
            "overwriting it (--overwrite, or overwrite=True)",
            out_dir,
        )


def _remove_stale_frames(folder: Path, keep: set[str]) -> None:
    if folder.is_dir():
        for path in folder.iterdir():
            if _FRAME_FILE.fullmatch(path.name) and path.name not in keep:
                path.unlink()


def _write_tiff(path: Path, volume: np.ndarray, z_ratio: float) -> None:
    with atomic_write(path, mode=None) as tmp:
        tifffile.imwrite(
            tmp,
            volume,
            imagej=True,
            resolution=(1.0, 1.0),
            photometric="minisblack",
            metadata={"spacing": float(z_ratio), "unit": "pixel", "axes": "ZYX"},
        )


def iter_write_synthetic(
    out_dir: str | Path,
    config: SyntheticConfig,
    *,
    overwrite: bool = False,
    labels: bool = False,
) -> Generator[Progress, None, SyntheticPaths]:
    """Write a synthetic dataset frame by frame, yielding a ``Progress("write", frames
    written, frames)`` after each.

    Layout under ``out_dir``: ``images/t000.tif ...`` (ZYX uint16, ImageJ spacing = z_ratio),
    ``tracks.csv`` (our CSV), ``01_GT/TRA/`` (CTC ground truth), optionally ``labels/t000.tif``
    (track-id masks), and last ``synthetic.json`` (config, summary, layout). Returns (as the
    generator's value) the written :class:`SyntheticPaths`.
    """
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    sim = simulate(config)
    graph = sim.graph
    out.mkdir(parents=True, exist_ok=True)
    image_dir = out / "images"
    image_dir.mkdir(exist_ok=True)
    names = [_frame_name(t, config.frames) for t in range(config.frames)]
    _remove_stale_frames(image_dir, set(names))
    label_dir = out / "labels"
    if labels:
        label_dir.mkdir(exist_ok=True)
    _remove_stale_frames(label_dir, set(names) if labels else set())
    z_ratio = 1.0 if config.is_2d else config.z_ratio

    tracks_path = out / "tracks.csv"
    write_csv(graph, tracks_path)
    ctc_dir = out / "01_GT"
    write_ctc(graph, ctc_dir, gt=True, shape=(config.frames, *config.shape), z_ratio=z_ratio)

    paths = SyntheticPaths(out, [], tracks_path, ctc_dir, out / "synthetic.json")
    for t, (image, mask) in enumerate(sim.iter_frames(labels)):
        _write_tiff(image_dir / names[t], image, z_ratio)
        paths.images.append(image_dir / names[t])
        if mask is not None:
            _write_tiff(label_dir / names[t], mask, z_ratio)
            paths.labels.append(label_dir / names[t])
        yield Progress("write", t + 1, config.frames)

    paths.summary = summarise(sim.tracks, graph)
    metadata = {
        "generator": "napari_cellect.data.synthetic",
        "config": config.to_dict(),
        "summary": paths.summary,
        "files": {
            "images": "images/t###.tif (Z, Y, X) uint16, ImageJ spacing = z_ratio",
            "tracks": "tracks.csv (napari-cellect CSV, z in slices)",
            "ctc": "01_GT/TRA (Cell Tracking Challenge ground truth)",
            **({"labels": "labels/t###.tif track-id masks of the nuclei"} if labels else {}),
        },
    }
    with atomic_write(paths.metadata) as handle:
        json.dump(metadata, handle, indent=2)
        handle.write("\n")
    return paths


def write_synthetic(
    out_dir: str | Path,
    config: SyntheticConfig,
    *,
    overwrite: bool = False,
    labels: bool = False,
) -> SyntheticPaths:
    """Write a synthetic dataset (see :func:`iter_write_synthetic`) and return its paths."""
    return run_to_end(iter_write_synthetic(out_dir, config, overwrite=overwrite, labels=labels))


def summarise(tracks: pd.DataFrame, graph: TrackGraph | None = None) -> dict[str, int]:
    """Counts that describe a ground truth: nodes, tracks (branches), divisions, roots, frames."""
    parents = tracks["parent_id"].to_numpy()
    summary = {
        "frames": int(tracks["t"].max()) + 1 if len(tracks) else 0,
        "nodes": len(tracks),
        "divisions": int((tracks["division_score"] > 0).sum()),
        "roots": int(np.count_nonzero(parents < 0)),
    }
    if graph is not None:
        summary["tracks"] = int(len(np.unique(graph.track_ids())))
    return summary
