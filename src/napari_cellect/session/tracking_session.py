"""A tracking session: one TrackGraph with its undo history, autosave journal and metadata.

The session owns the interactive loop: track (:meth:`TrackingSession.from_tracking` on the
result of :func:`~napari_cellect.session.jobs.tracking_job`), edit with undo (``history``),
collect corrections (:meth:`~TrackingSession.corrections`), fine-tune
(:meth:`~TrackingSession.iter_finetune`), adapt the detector
(:meth:`~TrackingSession.iter_adapt_detector`) and predict again the frames nobody approved
(:meth:`~TrackingSession.iter_redetect_relink`), re-link keeping approved work
(:meth:`~TrackingSession.iter_relink`) and export (:meth:`~TrackingSession.export`). The
widgets, ``cellect finetune`` and ``cellect track --keep-approved`` all go through it; the
per-viewer controller binds it to layers. It imports neither Qt nor napari.

Autosave: the journal is started lazily, just before the first edit, so opening a file writes
nothing. It lives beside the tracks file (``journal_folder_for``), beside the image the tracks
came from, or in a folder the user picks; data without any file journals under
:func:`default_journal_root`. Saving keeps the journal (so undo past the save still replays
correctly); closing a session that has no unsaved edits deletes it.

Learning from corrections: a tracking result keeps the per-frame detections it was linked from
and the model that made it, so fine-tuning and re-linking never run the U-Net again; the
corrections are built from the graph and the history and kept beside the journal
(:mod:`.corrections_store`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cellect.errors import Cancelled, CellectError, InputError
from napari_cellect.progress import Step
from napari_cellect.session.corrections_store import load_stored, needs_file, newer_wins
from napari_cellect.session.geometry import Geometry
from napari_cellect.track.correction_labels import CorrectionConfig
from napari_cellect.track.corrections import (
    CorrectionSet,
    build_corrections,
    corrections_from_history,
    save_corrections,
)
from napari_cellect.track.edits import Command, History
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.journal import Journal, journal_folder_for, restore

if TYPE_CHECKING:
    from napari_cellect.data.arrays import ImageData, LabelSource
    from napari_cellect.model.bundle import ModelBundle
    from napari_cellect.session.jobs import (
        DetectOutput,
        RedetectOutput,
        RelinkOutput,
        TrackingOutput,
    )
    from napari_cellect.track.detections import Detections
    from napari_cellect.train.adapt_unet import AdaptConfig
    from napari_cellect.train.detector_part import DetectorTrainer
    from napari_cellect.train.finetune_config import FinetuneConfig
    from napari_cellect.train.finetune_guard import FinetuneResult

logger = logging.getLogger(__name__)

#: a callback asked whether to restore an existing journal (gets the journal folder)
AskRestore = Callable[[Path], bool]


def correction_config(bundle: ModelBundle) -> CorrectionConfig:
    """Correction labels with as many candidate negatives as ``bundle``'s scorers look at."""
    thresholds = bundle.thresholds
    return CorrectionConfig(link_k=thresholds.link.k, merge_k=thresholds.merge.k)


def default_journal_root() -> Path:
    """Where sessions without a file keep their journals (the user's data folder)."""
    import platformdirs

    return platformdirs.user_data_path("napari-cellect") / "journals"


def _unique_folder(root: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "session"
    return root / f"{safe}-{stamp}-{os.getpid()}.cellect-journal"


@dataclass(eq=False)
class TrackingSession:
    """A TrackGraph being looked at and corrected.

    Attributes:
        graph: the one data model; every edit goes through ``history``.
        history: the undo/redo stack of ``graph``.
        name: prefix of the layer names.
        source: the tracks file this session was read from and saves to (None: not saved yet).
        journal_folder: where edits are autosaved (None: chosen at the first edit).
        geometry: voxel size and 2D/3D, shared with the image.
        labels: masks whose values are track ids, (T, Z, Y, X) or (T, Y, X), or None.
        image_shape: (T, Z, Y, X) of the image the tracks belong to, if known (CTC export).
        detections: the raw (unmerged) per-frame detections of the tracking run or detection
            run the tracks come from, or None (tracks read from a file).
        z_ratio: the anisotropy the detections were made with (None: from ``geometry``).
        cell_radius: the nucleus radius (xy pixels) the U-Net saw the frames resized for, in
            the tracking run or detection run the tracks come from (None: the model's own size,
            no resizing); the Fine-tune widget detects with it again.
        model: the ModelBundle in use for this session (None: ``model_path``, or the bundled
            default, loaded when needed); a fine-tune replaces it.
        model_path: the file the session's first model came from (None: the bundled default);
            a fine-tuned model is never saved over it.
        model_tuned: True once ``model`` was fine-tuned on this session's corrections.
        model_saved_as: where the fine-tuned ``model`` was last saved (None: not saved).
        stored_corrections: corrections of earlier sessions read from the journal folder.
        detections_digest: the U-Net digest of the model that found ``detections`` (None:
            unknown); fine-tuning and re-linking refuse a model with another U-Net.
    """

    graph: TrackGraph
    history: History
    name: str = "cellect"
    source: Path | None = None
    journal_folder: Path | None = None
    geometry: Geometry = field(default_factory=Geometry)
    labels: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None
    detections: list[Detections] | None = None
    z_ratio: float | None = None
    cell_radius: float | None = None
    model: ModelBundle | None = None
    model_path: Path | None = None
    model_tuned: bool = False
    model_saved_as: Path | None = None
    stored_corrections: CorrectionSet | None = None
    detections_digest: str | None = None
    _journal: Journal | None = field(default=None, repr=False)
    _saved_top: Command | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_graph(cls, graph: TrackGraph, **kwargs: object) -> TrackingSession:
        """A fresh session (empty history) around ``graph``."""
        session = cls(graph=graph, history=History(graph), **kwargs)  # type: ignore[arg-type]
        session._saved_top = None
        return session

    @classmethod
    def from_tracking(
        cls,
        output: TrackingOutput,
        *,
        z_ratio: float,
        model_path: str | Path | None = None,
        **kwargs: Any,
    ) -> TrackingSession:
        """A session around a tracking run's result, keeping its raw detections and model for
        fine-tuning and re-linking (the U-Net never runs again for them)."""
        result = output.result
        kwargs.setdefault("detections_digest", _digest(output.model))
        return cls.from_graph(
            result.graph,
            labels=output.labels,
            detections=list(getattr(result, "raw_detections", None) or []) or None,
            z_ratio=getattr(result, "z_ratio", None) or float(z_ratio),
            model=output.model,
            model_path=Path(model_path) if model_path else None,
            **kwargs,
        )

    @classmethod
    def read_tracks(cls, path: str | os.PathLike[str], **kwargs: Any) -> TrackingSession:
        """A session on a tracks file and the corrections saved beside it, that writes nothing:
        its journal (if any) is neither restored nor touched (for the command line)."""
        from napari_cellect.data.annotations import read_tracks

        path = Path(path)
        kwargs.setdefault("name", _stem(path))
        return cls.from_graph(
            read_tracks(path),
            source=path,
            stored_corrections=load_stored(journal_folder_for(path)),
            **kwargs,
        )

    @classmethod
    def open_tracks(
        cls,
        path: str | os.PathLike[str],
        ask_restore: AskRestore | None = None,
        **kwargs: object,
    ) -> TrackingSession:
        """Read a tracks file; when its journal holds edits, offer to restore them.

        ``ask_restore`` gets the journal folder and returns True to restore the edits; when it
        is None or says no, the old journal is deleted.
        """
        from napari_cellect.data.annotations import read_tracks

        path = Path(path)
        folder = journal_folder_for(path)
        if Journal.exists(folder) and ask_restore is not None and ask_restore(folder):
            session = cls.open_journal(folder, source=path, **kwargs)
            return session
        if folder.exists():
            Journal(folder).discard()  # corrections.json, if any, stays
        graph = read_tracks(path)
        name = kwargs.pop("name", None) or _stem(path)
        return cls.from_graph(
            graph,
            name=name,
            source=path,
            journal_folder=folder,
            stored_corrections=load_stored(folder),
            **kwargs,
        )

    @classmethod
    def open_journal(
        cls, folder: str | os.PathLike[str], source: Path | None = None, **kwargs: Any
    ) -> TrackingSession:
        """Rebuild a session (graph and undo history) from an autosave journal and keep it going."""
        folder = Path(folder)
        history = restore(folder)
        if "name" not in kwargs:
            kwargs["name"] = _stem(source) if source is not None else _stem(folder)
        kwargs.setdefault("stored_corrections", load_stored(folder))
        session = cls(
            graph=history.graph, history=history, source=source, journal_folder=folder, **kwargs
        )
        session._journal = Journal(folder)
        session._journal.resume(history)
        # the restored edits are not in any saved file: the session starts dirty
        session._saved_top = None
        logger.info("restored %d edits from %s", len(history.done), folder)
        return session

    # ------------------------------------------------------------------ autosave
    @property
    def journal(self) -> Journal | None:
        return self._journal

    @property
    def dirty(self) -> bool:
        """True when the graph differs from the last saved (or opened) file.

        A session that never had a file (a tracking result) is unsaved by definition.
        """
        if self.source is None:
            return len(self.graph) > 0
        return self.has_unsaved_edits

    @property
    def has_unsaved_edits(self) -> bool:
        """True when edits were made (or restored) since the last save or open."""
        return self.history.last_done is not self._saved_top

    def ensure_journal(self) -> Journal:
        """Start autosaving (writes the current graph as the journal's base) if not yet started."""
        if self._journal is None:
            if self.journal_folder is None:
                self.journal_folder = _unique_folder(default_journal_root(), self.name)
            self.journal_folder.parent.mkdir(parents=True, exist_ok=True)
            self._journal = Journal(self.journal_folder)
            self._journal.start(self.history, source=str(self.source) if self.source else None)
            logger.info("autosaving edits to %s", self.journal_folder)
        return self._journal

    def move_journal(self, folder: str | os.PathLike[str]) -> None:
        """Autosave into ``folder`` from now on (the current graph becomes the journal's base).

        Undo past this point is not replayable from the new journal, so the history is cleared.
        """
        if self._journal is not None:
            self._journal.close()
        self._journal = None
        self.journal_folder = Path(folder)
        self.history.clear()
        self._saved_top = None
        self.ensure_journal()

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the graph to our CSV (atomically) and remember it as the saved state."""
        from napari_cellect.data.export import write_csv

        target = Path(path) if path is not None else self.source
        if target is None:
            raise ValueError("this session has no file yet; give a path to save to")
        write_csv(self.graph, target)
        if self.source is None:
            self.source = target
        self._saved_top = self.history.last_done
        self.save_corrections(only_if_needed=True)
        return target

    # ------------------------------------------------------------------ corrections
    @property
    def anisotropy(self) -> float:
        """z spacing / xy spacing of the detections (or of the layers)."""
        return float(self.z_ratio) if self.z_ratio else self.geometry.z_ratio

    def corrections(self, config: CorrectionConfig | None = None) -> CorrectionSet:
        """Training labels from this session's edits, over the stored ones they override.

        Raises:
            ContradictoryCorrections: naming the nodes (from the core).
        """
        current = build_corrections(
            self.graph,
            corrections_from_history(self.history),
            z_ratio=self.anisotropy,
            config=config,
            source=str(self.source or self.name),
        )
        if self.stored_corrections is None:
            return current
        return newer_wins(self.stored_corrections, current)

    def save_corrections(self, only_if_needed: bool = False) -> Path | None:
        """Write the corrections to ``corrections.json`` in the journal folder.

        With ``only_if_needed`` nothing is written unless the history holds something the
        tracks file cannot (broken links, division marks, deletions) or earlier corrections
        were read. Failures are logged, never raised: saving the tracks must not fail for this.
        """
        if self.journal_folder is None:
            return None
        if (
            only_if_needed
            and self.stored_corrections is None
            and not needs_file(corrections_from_history(self.history))
        ):
            return None
        try:
            return save_corrections(self.corrections(), self.journal_folder)
        except (CellectError, OSError) as error:
            logger.warning("corrections not saved: %s", error)
            return None

    # ------------------------------------------------------------------ the loop
    def use_detections(
        self, output: DetectOutput, z_ratio: float, cell_radius: float | None = None
    ) -> None:
        """Keep the raw detections of a detection run (for tracks read from a file)."""
        self.detections = output.detections
        self.detections_digest = _digest(output.model)
        self.z_ratio = z_ratio
        self.cell_radius = cell_radius
        if self.model is None:
            self.model = output.model

    def use_tuned_model(self, tuned: ModelBundle) -> None:
        """Make a fine-tuned model this session's model (not saved yet)."""
        self.model = tuned
        self.model_tuned = True
        self.model_saved_as = None

    def prepare_finetune(self) -> CorrectionSet:
        """The corrections to fine-tune on, checked, and saved beside the journal first.

        Raises:
            NotEnoughCorrections, ContradictoryCorrections: what is missing or contradictory.
        """
        corrections = self.corrections()
        corrections.require_trainable()
        try:
            self.ensure_journal()
        except OSError as error:
            logger.warning("no journal folder for the corrections: %s", error)
        self.save_corrections()
        return corrections

    def finetune_job(
        self,
        config: FinetuneConfig | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        trainers: Sequence[Any] = (),
    ) -> Generator[Step, None, FinetuneResult | None]:
        """The guarded fine-tune of this session's model on its corrections (a generator for a
        worker; applies nothing: :meth:`keep_finetune` does). What cannot work is refused here,
        before any work: no or contradictory corrections, corrections on frames never tracked,
        a model whose U-Net did not make this session's detections.

        ``trainers`` are extra parts the guard trains and judges (the detector's adaptation)."""
        from napari_cellect.session.jobs import finetune_job, load_model

        corrections = self.prepare_finetune()
        detections = self._detections()
        model = load_model(self.model, self.model_path)
        self.check_model_made_detections(model)
        return finetune_job(
            model,
            None,
            corrections,
            detections,
            z_ratio=self.anisotropy,
            config=config,
            should_stop=should_stop,
            source=str(self.source or self.name),
            trainers=trainers,
        )

    def iter_finetune(
        self, config: FinetuneConfig | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> Generator[Step, None, FinetuneResult | None]:
        """:meth:`finetune_job`; returns its :class:`FinetuneResult` (None: cancelled), which
        the caller keeps (:meth:`keep_finetune`) or drops: the session is not changed here."""
        return (yield from self.finetune_job(config, should_stop))

    def keep_finetune(self, result: FinetuneResult) -> bool:
        """Make the tuned model of ``result`` this session's model; False (and nothing changes)
        when the guard adopted nothing."""
        if not result.changed:
            return False
        self.use_tuned_model(result.bundle)
        return True

    def detector_trainer(
        self, images: ImageData, config: AdaptConfig | None = None, device: str = "auto"
    ) -> DetectorTrainer:
        """The detector as a part of :meth:`finetune_job` (``trainers=[...]``), adapted on
        ``images`` (the images the tracks belong to, as they are). After keeping a result that
        adopted it, :meth:`iter_redetect_relink` predicts the frames nobody approved again."""
        from napari_cellect.train.detector_part import DetectorTrainer

        self._check_frames_as_they_are()
        return DetectorTrainer(images, self._detections(), self.anisotropy, config, device)

    @property
    def needs_redetection(self) -> bool:
        """True when the session's model has another U-Net than the one that found its
        detections (a kept fine-tune adopted the detector): :meth:`iter_redetect_relink`."""
        if self.model is None or self.detections_digest is None:
            return False
        return _digest(self.model) != self.detections_digest

    def _check_frames_as_they_are(self) -> None:
        if self.cell_radius is not None:
            raise InputError(
                f"these tracks were detected with the frames resized for a nucleus radius of "
                f"{self.cell_radius:g} px; the detector can only be adapted on frames as they "
                "are: track again without a nucleus radius first"
            )

    def check_model_made_detections(self, model: ModelBundle) -> None:
        """Refuse a model whose U-Net is not the one that found this session's detections (a
        model trained or tuned on other images): its scorers would read embeddings of another
        network. Nothing is changed."""
        if self.detections_digest is None:
            return
        from napari_cellect.infer.predict import model_digest

        if model_digest(model.unet) != self.detections_digest:
            raise InputError(
                f"the model {model.metadata.name!r} has another U-Net than the one that found "
                "this session's detections (it was trained or tuned on other images): detect "
                "the cells again with it, or choose the model the tracks were made with. "
                "Nothing was changed"
            )

    def iter_adapt_detector(
        self,
        images: ImageData,
        config: AdaptConfig | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Generator[Step, None, ModelBundle | None]:
        """Adapt the model's U-Net to this session's corrections on ``images`` (the images the
        tracks belong to); makes the adapted model the session's and returns it (None:
        cancelled; the model in use is then unchanged). Follow it with
        :meth:`iter_redetect_relink` (and scorer fine-tuning in between, if wanted)."""
        from napari_cellect.session.jobs import load_model
        from napari_cellect.train.adapt_unet import adapt_detector_part

        self._check_frames_as_they_are()
        corrections = self.prepare_finetune()
        base = load_model(self.model, self.model_path)
        try:
            adapted = yield from adapt_detector_part(
                base, corrections, images, self.detections, should_stop, config
            )
        except Cancelled:
            logger.info("detector adaptation cancelled; the model in use is unchanged")
            return None
        self.use_tuned_model(adapted)
        return adapted

    def iter_redetect_relink(
        self,
        images: ImageData,
        device: str = "auto",
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Generator[Step, None, RedetectOutput | None]:
        """Predict again, with the session's (adapted) model, only the frames nobody approved
        and their neighbours (:func:`~napari_cellect.session.jobs.frames_to_redetect`), then
        re-link keeping every approved link; applies the result as one undoable edit and keeps
        the new detections. None: cancelled, nothing changed."""
        from napari_cellect.session.jobs import load_model, redetect_relink_job

        model = load_model(self.model, self.model_path)
        output = yield from redetect_relink_job(
            images,
            model,
            self.graph.copy(),
            self.detections,
            z_ratio=self.anisotropy,
            corrections=self.corrections(),
            device=device,
            should_stop=should_stop,
            cell_radius=self.cell_radius,
        )
        if output is not None:
            self.apply_redetect(output)
        return output

    def apply_redetect(
        self, output: RedetectOutput, execute: Callable[[Command], Command | None] | None = None
    ) -> Command | None:
        """Keep the detections of a re-detection (with the U-Net that found them, so the model
        is accepted for fine-tuning and re-linking again) and apply its re-link as one edit."""
        self.detections = output.detections
        self.detections_digest = _digest(output.relink.model)
        return self.apply_relink(output.relink, execute)

    def relink_job(
        self, should_stop: Callable[[], bool] = lambda: False
    ) -> Generator[Step, None, RelinkOutput | None]:
        """The re-link of this session's tracks (a snapshot) with its model, keeping approved
        work and the corrections; applies nothing (see :meth:`apply_relink`)."""
        from napari_cellect.session.jobs import load_model, relink_job

        model = load_model(self.model, self.model_path)
        self.check_model_made_detections(model)
        return relink_job(
            self._detections(),
            model,
            None,
            self.graph.copy(),
            z_ratio=self.anisotropy,
            corrections=self.corrections(),
            should_stop=should_stop,
        )

    def apply_relink(
        self, output: RelinkOutput, execute: Callable[[Command], Command | None] | None = None
    ) -> Command | None:
        """Apply a re-link as one undoable edit (through ``execute``, default the history)."""
        if self.model is None:
            self.model = output.model  # the default model, loaded once
        if execute is None:
            self.ensure_journal()  # autosave from the first edit on, as the controller does
            execute = self.history.execute
        return execute(output.command)

    def iter_relink(
        self, should_stop: Callable[[], bool] = lambda: False
    ) -> Generator[Step, None, RelinkOutput | None]:
        """:meth:`relink_job` and :meth:`apply_relink` in one (None: cancelled)."""
        output = yield from self.relink_job(should_stop)
        if output is not None:
            self.apply_relink(output)
        return output

    def export(
        self, fmt: str, path: str | os.PathLike[str], labels: LabelSource | None = None
    ) -> tuple[Path, str]:
        """Write the tracks as ``csv``, ``ctc`` or ``geff`` (see
        :func:`~napari_cellect.session.export.export_session`)."""
        from napari_cellect.session.export import export_session

        return export_session(self, fmt, path, labels if labels is not None else self.labels)

    def _detections(self) -> list[Detections]:
        if not self.detections:
            raise InputError(
                "this session has no detections: track the images, or detect "
                "on the image the tracks belong to, first"
            )
        return self.detections

    def close(self) -> None:
        """Stop autosaving; the journal is deleted unless it holds unsaved edits."""
        if self._journal is None:
            return
        if self.dirty:
            self._journal.close()
            logger.info("unsaved edits kept in %s", self.journal_folder)
        else:
            self._journal.discard()
        self._journal = None


def _digest(model: ModelBundle | None) -> str | None:
    """The U-Net digest of a model bundle (None for none)."""
    if model is None:
        return None
    from napari_cellect.infer.predict import model_digest

    return model_digest(model.unet)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".cellect-journal", ".csv", ".txt", ".zarr", ".geff"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "cellect"
