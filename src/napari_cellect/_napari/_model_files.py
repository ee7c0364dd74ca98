"""The session's model as the fine-tune widget shows and saves it. No Qt here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import napari_cellect
from napari_cellect.errors import InputError

if TYPE_CHECKING:
    from napari_cellect.session import TrackingSession

logger = logging.getLogger(__name__)

#: where the bundled model lives (checked without importing torch)
BUNDLED_MODEL = Path(napari_cellect.__file__).parent / "model" / "weights" / "default.pt"
MODEL_SUFFIX = ".pt"


def model_name(model: Any) -> str:
    return str(getattr(getattr(model, "metadata", None), "name", "model"))


def describe_model(session: TrackingSession) -> str:
    """Which model the session uses, and whether a fine-tuned one is saved."""
    if session.model_tuned:
        saved = (
            f"saved as {session.model_saved_as.name}" if session.model_saved_as else "not saved yet"
        )
        return f"{model_name(session.model)} (fine-tuned here, {saved})"
    if session.model is not None:
        where = session.model_path.name if session.model_path else "bundled default"
        return f"{model_name(session.model)} ({where})"
    if session.model_path is not None:
        return f"{session.model_path.name} (loaded when needed)"
    if not BUNDLED_MODEL.exists():
        return "none (the bundled default model is not installed)"
    return "the bundled default model (loaded when needed)"


def has_model(session: TrackingSession) -> bool:
    """True when a job could get a model for the session (in memory, a file, the default)."""
    return session.model is not None or session.model_path is not None or BUNDLED_MODEL.exists()


def suggested_path(session: TrackingSession) -> Path:
    """Where the save dialog starts: beside the model (or the tracks), named after the model."""
    folder = (
        session.model_saved_as or session.model_path or session.source or Path.home() / "model"
    ).parent
    return folder / (model_name(session.model).replace("+", "_") + MODEL_SUFFIX)


def save_tuned_model(session: TrackingSession, path: str | Path) -> Path:
    """Write the session's fine-tuned model to ``path`` (``.pt`` added when missing).

    Raises:
        InputError: nothing fine-tuned to save, or ``path`` is the file the session's model
            came from or the bundled model (a fine-tuned model never replaces them).
    """
    if session.model is None or not session.model_tuned:
        raise InputError("fine-tune first: there is no fine-tuned model to save")
    target = Path(path)
    if target.suffix != MODEL_SUFFIX:
        target = target.with_name(target.name + MODEL_SUFFIX)
    protected = [p for p in (session.model_path, BUNDLED_MODEL) if p is not None]
    if any(_same_file(target, p) for p in protected):
        raise InputError(
            f"{target} is the model these tracks started from; save the "
            "fine-tuned model under another name"
        )
    session.model.save(target)
    session.model_saved_as = target
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:
        return False
