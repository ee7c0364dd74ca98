"""A division needs a plausible pair of daughters: constructed mothers and pairs, linked with the
geometric scorer and with a stand-in for a learned scorer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_cellect.errors import InputError
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track.detections import Detections
from napari_cellect.track.division_geometry import plausible_daughters
from napari_cellect.track.link import link_frame_pair, link_sequence
from napari_cellect.track.scoring_protocol import CandidateScores

Z_RATIO = 2.0
R_MOTHER = 8.0
MOTHER_AT = (4.0, 40.0, 40.0)


def _det(t, positions, radius, *, division=None) -> Detections:
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    return Detections(
        t=t,
        positions=pos,
        embeddings=np.ones((n, 4), np.float32),
        radius=np.broadcast_to(np.asarray(radius, np.float32), (n,)).copy(),
        division=np.zeros((n, 2), np.float32) if division is None else division,
        score=np.ones(n, np.float32),
    )


def _mother() -> Detections:
    """A cell the scorer is sure divides (p_divide 0.95)."""
    return _det(0, [MOTHER_AT], R_MOTHER, division=np.array([[0.95, 0.0]], np.float32))


def _pair(offset_1, offset_2, radius_1, radius_2) -> Detections:
    """Two detections of the next frame at offsets (x, xy pixels) from the mother."""
    z, y, x = MOTHER_AT
    return _det(1, [[z, y, x + offset_1], [z, y, x + offset_2]], [radius_1, radius_2])


class SureScorer:
    """A stand-in for a learned link scorer: every candidate matches with p 0.9 and the mothers
    keep their own division probability, so only the linker's geometry can refuse a division."""

    def score(self, query, cands, cand_idx, z_ratio) -> CandidateScores:
        p_match = np.where(cand_idx >= 0, 0.9, 0.0).astype(np.float32)
        return CandidateScores(
            p_match=p_match,
            p_none=np.full(len(query), 0.01, np.float32),
            p_divide=query.division[:, 0].astype(np.float32),
        )


SCORERS = [pytest.param(None, id="geometric"), pytest.param(SureScorer(), id="learned")]


def _divides(daughters: Detections, scorer, config=None) -> bool:
    links = link_frame_pair(_mother(), daughters, scorer, config or LinkingConfig(), Z_RATIO)
    return bool(links.is_division.any())


@pytest.mark.parametrize("scorer", SCORERS)
def test_a_true_division_with_daughters_on_opposite_sides_is_linked(scorer):
    # daughters about 1.2 mother radii apart, each 0.8 of the mother's radius
    daughters = _pair(-0.6 * R_MOTHER, 0.6 * R_MOTHER, 0.8 * R_MOTHER, 0.8 * R_MOTHER)
    assert _divides(daughters, scorer)
    graph = link_sequence([_mother(), daughters], scorer, LinkingConfig(), Z_RATIO)
    assert graph.divisions().tolist() == [0]
    assert graph.children_of(0).tolist() == [1, 2]


@pytest.mark.parametrize("scorer", SCORERS)
def test_a_nucleus_split_by_the_detector_is_not_a_division(scorer):
    # two fragments close together inside the mother's nucleus, each half its size
    fragments = _pair(-0.2 * R_MOTHER, 0.2 * R_MOTHER, 0.5 * R_MOTHER, 0.5 * R_MOTHER)
    assert not _divides(fragments, scorer)
    links = link_frame_pair(_mother(), fragments, scorer, LinkingConfig(), Z_RATIO)
    assert len(links.src_idx) == 1  # the mother continues into one fragment...
    graph = link_sequence([_mother(), fragments], scorer, LinkingConfig(), Z_RATIO)
    assert len(graph.divisions()) == 0
    assert sorted(graph["parent_id"].tolist()) == [-1, -1, 0]  # ...the other starts a track
    # the same pair is a division where the test is switched off (the linker before it)
    assert _divides(fragments, scorer, LinkingConfig(division_geometry=False))


@pytest.mark.parametrize("scorer", SCORERS)
def test_daughters_of_very_unequal_size_are_rejected(scorer):
    unequal = _pair(-0.6 * R_MOTHER, 0.6 * R_MOTHER, 0.9 * R_MOTHER, 0.3 * R_MOTHER)
    assert not _divides(unequal, scorer)
    assert _divides(unequal, scorer, LinkingConfig(division_geometry=False))


@pytest.mark.parametrize("scorer", SCORERS)
def test_daughters_on_the_same_side_of_the_mother_are_rejected(scorer):
    same_side = _pair(1.0 * R_MOTHER, 2.2 * R_MOTHER, 0.8 * R_MOTHER, 0.8 * R_MOTHER)
    assert not _divides(same_side, scorer)
    assert _divides(same_side, scorer, LinkingConfig(division_geometry=False))


def test_daughters_larger_than_the_mother_or_too_far_apart_are_rejected():
    too_big = _pair(-0.8 * R_MOTHER, 0.8 * R_MOTHER, 1.5 * R_MOTHER, 1.5 * R_MOTHER)
    too_far = _pair(-1.7 * R_MOTHER, 1.7 * R_MOTHER, 0.8 * R_MOTHER, 0.8 * R_MOTHER)
    for pair in (too_big, too_far):
        assert not _divides(pair, None)
        assert _divides(pair, None, LinkingConfig(division_geometry=False))


def test_the_rule_is_relative_to_the_mother_radius():
    """The same division and the same split, scaled 3x in space and size, get the same answer."""
    for factor in (1.0, 3.0):
        mother = _mother()
        mother = dataclasses.replace(
            mother, positions=mother.positions * factor, radius=mother.radius * factor
        )
        for offset, size, expected in ((0.6, 0.8, True), (0.2, 0.5, False)):
            pair = _pair(-offset * R_MOTHER, offset * R_MOTHER, size * R_MOTHER, size * R_MOTHER)
            pair = dataclasses.replace(
                pair, positions=pair.positions * factor, radius=pair.radius * factor
            )
            ok = plausible_daughters(mother, pair, [0], [0], [1], LinkingConfig(), Z_RATIO)
            assert ok.tolist() == [expected]


def test_a_pinned_child_is_kept_whatever_the_geometry():
    fragments = _pair(-0.2 * R_MOTHER, 0.2 * R_MOTHER, 0.5 * R_MOTHER, 0.5 * R_MOTHER)
    links = link_frame_pair(
        _mother(), fragments, None, LinkingConfig(), Z_RATIO, pinned=[(0, 0), (0, 1)]
    )
    assert sorted(links.dst_idx.tolist()) == [0, 1] and links.pinned.all()


def test_bad_daughter_settings_raise():
    with pytest.raises(InputError, match="daughter_min_size"):
        LinkingConfig(daughter_min_size=1.5, daughter_max_size=1.0)
    with pytest.raises(InputError, match="daughter_midpoint_radii"):
        LinkingConfig(daughter_midpoint_radii=-1.0)
