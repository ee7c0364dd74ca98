"""The detector (the U-Net's heads) as a part of a guarded fine-tune.

:class:`DetectorTrainer` is a :class:`~napari_cellect.train.finetune_guard.PartTrainer`: it
adapts the U-Net to the corrections (:func:`~napari_cellect.train.adapt_unet.
adapt_detector_part`) and returns an :class:`~napari_cellect.train.finetune_guard.UpdatePart`
named ``detector`` whose ``apply`` puts the adapted U-Net weights into a bundle and whose
``detect`` predicts frames with such a bundle (:func:`~napari_cellect.pipeline.iter_detect`,
raw detections, as tracking finds them). The guard detects the corrected frames with it, trains
the scorers again on those detections and adopts the detector (with those scorers) only where
it does better on the held-back corrections.

After a tuned model with an adopted detector is kept, the frames nobody approved must be
predicted again with it (:meth:`~napari_cellect.session.TrackingSession.iter_redetect_relink`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from napari_cellect.model.bundle import ModelBundle
from napari_cellect.progress import Step, run_to_end
from napari_cellect.track.correction_set import CorrectionSet
from napari_cellect.track.detections import Detections
from napari_cellect.train.adapt_unet import AdaptConfig, adapt_detector_part
from napari_cellect.train.finetune_guard import UpdatePart

#: the part's name in plans and reports
DETECTOR = "detector"
#: rough cost on 2 CPU cores of a frame of 1e6 voxels: trunk features once, detection (a
#: corrected frame and its neighbour are detected again to judge and retune the scorers)
FRAME_SECONDS_PER_MVOXEL = 2.5
#: rough cost on 2 CPU cores of one adaptation step (crops of AdaptConfig.crop over Z)
STEP_SECONDS = 1.5


def is_adapted(bundle: ModelBundle, base: ModelBundle) -> bool:
    """True when ``bundle``'s U-Net weights differ from ``base``'s (a detector was adopted)."""
    from napari_cellect.infer.predict import model_digest

    return model_digest(bundle.unet) != model_digest(base.unet)


@dataclass
class DetectorTrainer:
    """Adapts the detector of a bundle to corrections, for the guard (module docstring).

    ``images`` are the (T, Z, Y, X) images the tracks belong to (as they are: the frames cannot
    have been resized for a nucleus radius), ``detections`` the tracking run's raw ones."""

    images: Any
    detections: Sequence[Detections] | None
    z_ratio: float
    config: AdaptConfig | None = None
    device: str = "auto"
    tile: tuple[int, int, int] | None = None
    name: str = DETECTOR

    def train(
        self, bundle: ModelBundle, corrections: CorrectionSet, should_stop: Callable[[], bool]
    ) -> Generator[Step, None, UpdatePart | None]:
        adapted = yield from adapt_detector_part(
            bundle, corrections, self.images, self.detections, should_stop, self.config
        )
        state = {k: v.detach().clone() for k, v in adapted.unet.state_dict().items()}
        event = dict(adapted.metadata.history[-1])

        def apply(target: ModelBundle) -> None:
            target.unet.load_state_dict(state)
            target.metadata.history.append(dict(event))

        return UpdatePart(self.name, apply, self.detect)

    def detect(self, bundle: ModelBundle, frames: Sequence[int]) -> list[Detections]:
        """Raw detections of ``frames`` with ``bundle``'s U-Net (a part applied to it)."""
        from napari_cellect.pipeline import iter_detect

        steps = iter_detect(
            self.images,
            bundle,
            z_ratio=self.z_ratio,
            device=self.device,
            tile=self.tile,
            frames=list(frames),
        )
        return run_to_end(steps)

    def estimate_seconds(self, corrections: CorrectionSet, rounds: int = 2) -> float:
        """About how long the part takes on 2 CPU cores: trained ``rounds`` times (on the
        guard's training split, then on all corrections) and the corrected frames detected
        again each time."""
        cfg = self.config or AdaptConfig()
        frames = len(corrections.frames())
        shape = getattr(self.images, "shape", (0, 0, 0, 0))
        mvoxels = float(shape[1]) * float(shape[2]) * float(shape[3]) / 1e6
        per_round = 2 * frames * mvoxels * FRAME_SECONDS_PER_MVOXEL + cfg.steps * STEP_SECONDS
        return rounds * per_round


__all__ = ["DETECTOR", "DetectorTrainer", "is_adapted"]
