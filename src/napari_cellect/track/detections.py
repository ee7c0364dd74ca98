"""Per-frame detections (the output of the U-Net stage) and their on-disk cache.

A :class:`Detections` holds one frame's cells as parallel arrays, so linking, merging and
fine-tuning work on whole frames at once. :class:`DetectionCache` keeps one ``.npz`` per frame
together with a fingerprint of everything that produced it (model weights, input files,
settings), so re-linking never re-runs the U-Net and a stale cache is never used.

This module imports neither torch nor Qt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import InputError

logger = logging.getLogger(__name__)

#: Version of the ``.npz`` layout written by :class:`DetectionCache`; bump on incompatible change.
CACHE_FORMAT_VERSION = 1

#: What np.load raises on a damaged or foreign file.
_UNREADABLE = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)

_FIELDS = ("positions", "embeddings", "radius", "division", "score")
_FRAME_FILE = re.compile(r"^t(\d{6,})\.npz$")


@dataclass
class Detections:
    """The cells found in one frame, as parallel arrays of length N.

    Attributes:
        t: frame index.
        positions: (N, 3) float64 voxel coordinates (z, y, x), z in slices.
        embeddings: (N, E) float32 appearance embeddings read at the cell centres.
        radius: (N,) float32 predicted radius in xy pixels.
        division: (N, 2) float32 probabilities [mother-about-to-divide, newborn-daughter].
        score: (N,) float32 detection confidence (centre probability).
    """

    t: int
    positions: np.ndarray
    embeddings: np.ndarray
    radius: np.ndarray
    division: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        self.t = int(self.t)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        n = len(self.positions)
        emb = np.asarray(self.embeddings, dtype=np.float32)
        if emb.ndim == 1 and emb.size == 0:
            emb = emb.reshape(n, 0)
        self.embeddings = emb
        self.radius = np.asarray(self.radius, dtype=np.float32).reshape(-1)
        self.division = np.asarray(self.division, dtype=np.float32).reshape(-1, 2)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        expected = {
            "embeddings": (n, None),
            "radius": (n,),
            "division": (n, 2),
            "score": (n,),
        }
        for name, shape in expected.items():
            found = getattr(self, name).shape
            if len(found) != len(shape) or any(
                want is not None and got != want for got, want in zip(found, shape)
            ):
                raise InputError(
                    f"Detections for frame {self.t}: expected {name} of shape "
                    f"{tuple('E' if s is None else s for s in shape)} for {n} positions, "
                    f"found {found}"
                )

    @classmethod
    def empty(cls, t: int, dim: int) -> Detections:
        """No detections in frame ``t``, with ``dim``-dimensional embeddings."""
        return cls(
            t=t,
            positions=np.zeros((0, 3), np.float64),
            embeddings=np.zeros((0, int(dim)), np.float32),
            radius=np.zeros(0, np.float32),
            division=np.zeros((0, 2), np.float32),
            score=np.zeros(0, np.float32),
        )

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def embedding_dim(self) -> int:
        """E, the length of one embedding vector."""
        return self.embeddings.shape[1]

    def scaled_positions(self, z_ratio: float) -> np.ndarray:
        """Positions in isotropic xy-pixel units, ``(z * z_ratio, y, x)``: use for distances."""
        return self.positions * np.array([z_ratio, 1.0, 1.0])

    def subset(self, mask_or_idx: np.ndarray | Sequence[int] | Sequence[bool]) -> Detections:
        """The detections selected by a boolean mask of length N or by integer indices."""
        sel = np.asarray(mask_or_idx)
        if sel.dtype == bool and sel.shape != (len(self),):
            raise InputError(
                f"Detections.subset: expected a boolean mask of length {len(self)}, "
                f"found shape {sel.shape}"
            )
        if sel.dtype != bool:
            sel = sel.astype(np.int64, copy=False).reshape(-1)
        return Detections(
            t=self.t,
            positions=self.positions[sel],
            embeddings=self.embeddings[sel],
            radius=self.radius[sel],
            division=self.division[sel],
            score=self.score[sel],
        )

    @classmethod
    def concat(cls, items: Sequence[Detections]) -> Detections:
        """Join detections of the same frame (for example from several tiles)."""
        items = list(items)
        if not items:
            raise InputError("Detections.concat: expected at least one Detections, found none")
        t, dim = items[0].t, items[0].embedding_dim
        for d in items[1:]:
            if d.t != t or d.embedding_dim != dim:
                raise InputError(
                    f"Detections.concat: expected frame {t} with {dim}-d embeddings in every "
                    f"part, found frame {d.t} with {d.embedding_dim}-d embeddings"
                )
        return cls(
            t=t,
            positions=np.concatenate([d.positions for d in items]),
            embeddings=np.concatenate([d.embeddings for d in items]),
            radius=np.concatenate([d.radius for d in items]),
            division=np.concatenate([d.division for d in items]),
            score=np.concatenate([d.score for d in items]),
        )


# --------------------------------------------------------------------------- fingerprints


def file_digest(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's content (for example a model bundle), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(obj: object) -> Any:  # a JSON value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **_jsonable(dataclasses.asdict(obj))}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _source_identity(source: object) -> Any:  # a JSON value
    """A path's identity: resolved name, size and modification time, so edits invalidate.

    A folder (a zarr store) counts its newest modification time over all its subfolders: zarr
    writes each chunk to a temporary file renamed into place, which changes the time of the
    chunk's own folder, not that of the store's top folder. Folders only, so a store of a
    million chunk files costs one listing per folder, not a million ``stat`` calls.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        with contextlib.suppress(OSError):
            st = path.stat()
            newest = _newest_folder_mtime(path) if path.is_dir() else st.st_mtime_ns
            return [str(path.resolve()), st.st_size, newest]
        return str(path)
    return _jsonable(source)


def _newest_folder_mtime(root: Path) -> int:
    """The latest ``st_mtime_ns`` of ``root`` and every folder below it."""
    newest = root.stat().st_mtime_ns
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
                    pending.append(Path(entry.path))
    return newest


def fingerprint_parts(
    model_digest: str, sources: Sequence[object] = (), config: object = None
) -> dict[str, Any]:
    """What produced a set of detections, as JSON: model digest, input sources and settings.

    Args:
        model_digest: a digest of the model weights (for example :func:`file_digest` of the
            bundle file, or a hash of the state dict).
        sources: the input files (paths are identified by name, size and mtime) or any other
            JSON-able description of the input.
        config: settings (dataclasses, dicts, numbers) that change the detections.
    """
    return {
        "format": CACHE_FORMAT_VERSION,
        "model": str(model_digest),
        "sources": [_source_identity(s) for s in sources],
        "config": _jsonable(config),
    }


def fingerprint_of(parts: dict[str, Any]) -> str:
    """SHA-256 of :func:`fingerprint_parts`: the fingerprint stored in every cache file."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_fingerprint(
    model_digest: str, sources: Sequence[object] = (), config: object = None
) -> str:
    """Hash of what produced a set of detections (see :func:`fingerprint_parts`)."""
    return fingerprint_of(fingerprint_parts(model_digest, sources, config))


#: what differs between two :func:`fingerprint_parts`, in words
_PART_NAMES = {
    "format": "another cache format",
    "model": "another model",
    "sources": "other images",
    "config": "other settings",
}


# --------------------------------------------------------------------------- cache


class FrameCache(Protocol):
    """What prediction reads and writes of a cache of per-frame detections: a
    :class:`DetectionCache`, or one that also asks for each frame's foreground mask
    (``pipeline.py``)."""

    folder: Path

    def has(self, t: int) -> bool: ...

    def frames(self) -> list[int]: ...

    def load(self, t: int) -> Detections: ...

    def save(self, det: Detections) -> Path: ...


class DetectionCache:
    """One ``.npz`` per frame in ``folder``, valid only for one fingerprint.

    A frame file written under another fingerprint (other weights, inputs or settings) is
    treated as absent and is overwritten by the next :meth:`save`. With ``parts`` (the
    :func:`fingerprint_parts` the fingerprint was made from) the cache also keeps a
    ``cache.json`` manifest, so :meth:`mismatch` can say what changed since the cache was made.
    """

    MANIFEST = "cache.json"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        fingerprint: str = "",
        parts: dict[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.parts = parts
        if parts is not None and not fingerprint:
            fingerprint = fingerprint_of(parts)
        self.fingerprint = str(fingerprint)
        self._manifest_written = False

    def __repr__(self) -> str:
        return f"DetectionCache({str(self.folder)!r}, fingerprint={self.fingerprint[:12]!r})"

    def path(self, t: int) -> Path:
        """The file that holds frame ``t``."""
        return self.folder / f"t{int(t):06d}.npz"

    def _stored_fingerprint(self, path: Path) -> str | None:
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["version"]) != CACHE_FORMAT_VERSION:
                    return None
                return str(npz["fingerprint"])
        except _UNREADABLE as err:
            logger.warning("ignoring unreadable detection cache file %s: %s", path, err)
            return None

    def has(self, t: int) -> bool:
        """Whether frame ``t`` is cached under this cache's fingerprint."""
        path = self.path(t)
        return path.is_file() and self._stored_fingerprint(path) == self.fingerprint

    def frames(self) -> list[int]:
        """The frames cached under this fingerprint, sorted."""
        if not self.folder.is_dir():
            return []
        found = []
        for entry in self.folder.iterdir():
            m = _FRAME_FILE.match(entry.name)
            if m and self._stored_fingerprint(entry) == self.fingerprint:
                found.append(int(m.group(1)))
        return sorted(found)

    def load(self, t: int) -> Detections:
        """The cached detections of frame ``t``; raises InputError if absent or stale."""
        path = self.path(t)
        if not path.is_file():
            raise InputError(f"expected cached detections of frame {t}, found no file", path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                stored = str(npz["fingerprint"])
                if stored != self.fingerprint or int(npz["version"]) != CACHE_FORMAT_VERSION:
                    raise InputError(
                        f"expected detections made with fingerprint {self.fingerprint[:12]}, "
                        f"found {stored[:12]} (the cache is stale)",
                        path,
                    )
                return Detections(t=int(npz["t"]), **{k: npz[k] for k in _FIELDS})
        except _UNREADABLE as err:
            if isinstance(err, InputError):
                raise
            raise InputError(
                f"expected a detection cache .npz file, could not read it: {err}", path
            ) from err

    def mismatch(self) -> str | None:
        """None when the folder's manifest is absent or matches this cache; else what differs,
        in words (for example ``'another model, other settings'``)."""
        try:
            stored = json.loads((self.folder / self.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("fingerprint") == self.fingerprint:
            return None
        mine = self.parts or {}
        differ = [
            words
            for key, words in _PART_NAMES.items()
            if key in mine and stored.get("parts", {}).get(key) != _jsonable(mine[key])
        ]
        return ", ".join(differ) or "another model, other images or other settings"

    def _write_manifest(self) -> None:
        if self._manifest_written or self.parts is None:
            return
        text = json.dumps(
            {"fingerprint": self.fingerprint, "parts": self.parts},
            indent=1,
            sort_keys=True,
            default=str,
        )
        with atomic_write(self.folder / self.MANIFEST, mode="w") as f:
            f.write(text)
        self._manifest_written = True

    def save(self, det: Detections) -> Path:
        """Write one frame atomically; returns the file written."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        path = self.path(det.t)
        with atomic_write(path, mode="wb") as f:
            np.savez(
                f,
                version=np.int64(CACHE_FORMAT_VERSION),
                fingerprint=np.str_(self.fingerprint),
                t=np.int64(det.t),
                **{k: getattr(det, k) for k in _FIELDS},
            )
        return path

    def clear(self) -> int:
        """Delete every frame file in the folder (any fingerprint), the manifest and the kept
        foreground masks; returns how many frame files."""
        if not self.folder.is_dir():
            return 0
        removed = 0
        for entry in self.folder.iterdir():
            if _FRAME_FILE.match(entry.name):
                entry.unlink()
                removed += 1
        for kept in self.folder.glob("foreground-*"):  # the pipeline's masks kept beside
            shutil.rmtree(kept, ignore_errors=True)
        (self.folder / self.MANIFEST).unlink(missing_ok=True)
        return removed
