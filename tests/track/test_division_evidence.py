"""The linker's division evidence beyond the link scorer: the U-Net's division probability of
the mother, and a floor under a dividing cell's candidates for a daughter at that distance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.division_evidence import division_probability, with_daughter_floor
from napari_cellect.track.link import link_frame_pair
from napari_cellect.track.scoring_protocol import CandidateScores

R_MOTHER = 8.0


def test_division_probability_weighs_the_scorer_and_the_detector():
    scorer, detector = np.array([0.0, 0.2, 1.0]), np.array([0.8, 0.2, 0.0])
    alone = division_probability(scorer, detector, LinkingConfig(detector_division_weight=0.0))
    np.testing.assert_allclose(alone, scorer)
    mixed = division_probability(scorer, detector, LinkingConfig(detector_division_weight=0.5))
    np.testing.assert_allclose(mixed, [0.4, 0.2, 0.5])
    only = division_probability(scorer, detector, LinkingConfig(detector_division_weight=1.0))
    np.testing.assert_allclose(only, detector)


def test_daughter_floor_only_under_cells_that_may_divide_and_falls_with_distance():
    config = LinkingConfig(division_threshold=0.5, daughter_distance_scale=1.0)
    p_match = np.zeros((2, 3), np.float32)
    distance = np.array([[0.0, R_MOTHER, 3 * R_MOTHER]] * 2)
    valid = np.array([[True, True, True], [True, True, False]])
    floored = with_daughter_floor(
        p_match, distance, valid, np.full(2, R_MOTHER), np.array([0.9, 0.1]), config
    )
    near, one_radius, far = floored[0]
    assert near == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert near > one_radius > far > 0
    assert far < 0.2  # three radii away is no likely daughter
    np.testing.assert_array_equal(floored[1], 0.0)  # p_divide 0.1: not a dividing cell
    higher = np.full((2, 3), 0.99, np.float32)
    np.testing.assert_allclose(
        with_daughter_floor(higher, distance, valid, np.full(2, R_MOTHER), np.ones(2), config)[0],
        0.99,
        rtol=1e-6,
    )
    off = dataclasses.replace(config, daughter_distance_scale=0.0)
    assert not with_daughter_floor(
        p_match, distance, valid, np.full(2, R_MOTHER), np.ones(2), off
    ).any()


class LookScorer:
    """A stand-in for a link scorer that knows only its training data's daughters: it is sure
    the mother continues into the first cell, says the second is nobody of hers, and sees no
    division."""

    def score(self, query, cands, cand_idx, z_ratio) -> CandidateScores:
        p_match = np.where(cand_idx == 0, 0.95, 0.0).astype(np.float32)
        return CandidateScores(
            p_match=p_match,
            p_none=np.full(len(query), 0.05, np.float32),
            p_divide=np.zeros(len(query), np.float32),
        )


def _frames(mother_division: float) -> tuple[Detections, Detections]:
    mother = Detections(
        t=0,
        positions=np.array([[4.0, 40.0, 40.0]]),
        embeddings=np.ones((1, 4), np.float32),
        radius=np.array([R_MOTHER], np.float32),
        division=np.array([[mother_division, 0.0]], np.float32),
        score=np.ones(1, np.float32),
    )
    daughters = Detections(
        t=1,
        positions=np.array([[4.0, 40.0, 31.0], [4.0, 40.0, 49.0]]),
        embeddings=np.ones((2, 4), np.float32),
        radius=np.full(2, 6.0, np.float32),
        division=np.zeros((2, 2), np.float32),
        score=np.ones(2, np.float32),
    )
    return mother, daughters


def _children(mother_division: float, config: LinkingConfig) -> int:
    links = link_frame_pair(*_frames(mother_division), LookScorer(), config, z_ratio=2.0)
    return int(np.count_nonzero(links.src_idx == 0))


def test_a_division_the_scorer_cannot_see_is_found_from_the_detector_and_the_geometry():
    config = LinkingConfig(division_threshold=0.2)
    assert _children(0.9, config) == 2
    assert _children(0.1, config) == 1  # the detector sees no division either: one child
    scorer_alone = dataclasses.replace(
        config, detector_division_weight=0.0, daughter_distance_scale=0.0
    )
    assert _children(0.9, scorer_alone) == 1


@pytest.mark.parametrize(
    "field, value", [("detector_division_weight", 1.5), ("daughter_distance_scale", -1.0)]
)
def test_division_evidence_settings_are_checked(field, value):
    with pytest.raises(InputError, match=field):
        LinkingConfig(**{field: value})
