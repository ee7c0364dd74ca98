"""Every inference threshold in one object: :class:`TrackingConfig` (saved in a model bundle as
``thresholds``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.settings.merge import MergeConfig
from napari_cellect.settings.refinement import DivisionRefinementConfig


@dataclass(frozen=True)
class TrackingConfig:
    """Every inference threshold; saved in a model bundle as ``thresholds``."""

    detection: DetectionConfig = field(default_factory=DetectionConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    link: LinkingConfig = field(default_factory=LinkingConfig)
    division_refinement: DivisionRefinementConfig = field(default_factory=DivisionRefinementConfig)

    @classmethod
    def cellect_original(cls) -> TrackingConfig:
        """For imported original weights: the original's rules where they map onto ours
        (docs/method.md §4, §6, §7.1): peaks where the top centre level wins (ordinal
        p > 0.5), merge at P > 0.6 within max(5, 0.6 r), links within 6 x max(r, 5), link
        threshold 0.1, divisions at P(divides) >= 0.5."""
        return cls(
            detection=DetectionConfig(centre_mode="ordinal", threshold=0.5),
            merge=MergeConfig(k=5, threshold=0.6, max_distance_radii=0.6, max_distance_floor=5.0),
            link=LinkingConfig(
                k=5,
                max_distance_radii=6.0,
                radius_floor=5.0,
                link_threshold=0.1,
                division_threshold=0.5,
            ),
            # a full-resolution network: nothing to magnify
            division_refinement=DivisionRefinementConfig(enabled=False),
        )
