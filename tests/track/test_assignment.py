"""Tests of the min-cost assignment: hand-made cases and optimality against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_cellect.errors import GraphError, InputError
from napari_cellect.track.assignment import (
    AssignmentProblem,
    assignment_cost,
    solve_assignment,
)

INF = float("inf")


def _problem(n_s, n_t, edges, *, div=INF, appear=1.0, disappear=1.0, **kw) -> AssignmentProblem:
    src = [e[0] for e in edges]
    dst = [e[1] for e in edges]
    cost = [e[2] for e in edges]
    return AssignmentProblem(
        n_sources=n_s,
        n_targets=n_t,
        edge_src=src,
        edge_dst=dst,
        edge_cost=cost,
        division_cost=div,
        appear_cost=appear,
        disappear_cost=disappear,
        **kw,
    )


def _edges(result) -> set[tuple[int, int]]:
    return set(zip(result.src.tolist(), result.dst.tolist(), strict=True))


def test_one_to_one_picks_cheapest_global_matching():
    # Greedy would give 0->0 (0.1) and then 1->1 (5.0); the optimum swaps.
    edges = [(0, 0, 0.1), (0, 1, 0.2), (1, 0, 0.3), (1, 1, 5.0)]
    p = _problem(2, 2, edges, appear=10, disappear=10)
    result = solve_assignment(p)
    assert _edges(result) == {(0, 1), (1, 0)}
    assert result.cost == pytest.approx(0.5)


def test_division_needs_finite_division_cost():
    edges = [(0, 0, 0.1), (0, 1, 0.2)]
    no_div = solve_assignment(_problem(1, 2, edges, appear=1.0))
    assert len(no_div.src) == 1 and no_div.cost == pytest.approx(0.1 + 1.0)
    div = solve_assignment(_problem(1, 2, edges, div=0.3, appear=1.0))
    assert _edges(div) == {(0, 0), (0, 1)}
    assert div.n_children.tolist() == [2]
    assert div.cost == pytest.approx(0.1 + 0.2 + 0.3)
    # an expensive division loses against an appearance
    costly = solve_assignment(_problem(1, 2, edges, div=5.0, appear=1.0))
    assert len(costly.src) == 1


def test_appear_and_disappear_beat_expensive_edges():
    p = _problem(1, 1, [(0, 0, 3.0)], appear=1.0, disappear=1.0)
    assert len(solve_assignment(p).src) == 0
    p = _problem(1, 1, [(0, 0, 1.9)], appear=1.0, disappear=1.0)
    assert _edges(solve_assignment(p)) == {(0, 0)}


def test_pinned_edge_is_kept_against_the_costs():
    edges = [(0, 0, 0.1), (1, 1, 0.1), (1, 0, 9.0)]
    p = _problem(2, 2, edges, pinned_src=[1], pinned_dst=[0], appear=1.0, disappear=1.0)
    result = solve_assignment(p)
    assert (1, 0) in _edges(result)
    assert result.pinned[result.dst == 0].tolist() == [True]
    # source 0 lost its only candidate; target 1 can still take source 1 only as a division
    assert (0, 0) not in _edges(result)
    assert (1, 1) not in _edges(result)
    p_div = _problem(2, 2, edges, div=0.1, pinned_src=[1], pinned_dst=[0])
    assert (1, 1) in _edges(solve_assignment(p_div))


def test_pinned_division_keeps_both_children_even_when_forbidden():
    p = _problem(1, 3, [(0, 2, 0.01)], pinned_src=[0, 0], pinned_dst=[0, 1])
    result = solve_assignment(p)
    assert _edges(result) == {(0, 0), (0, 1)}
    assert result.n_children.tolist() == [2]


def test_fixed_parent_and_children_block_options():
    p = _problem(
        2, 2, [(0, 0, 0.1), (1, 1, 0.1)], fixed_parent=[True, False], fixed_children=[0, 2]
    )
    result = solve_assignment(p)
    assert len(result.src) == 0
    assert result.n_children.tolist() == [0, 2]


def test_bad_pins_raise():
    with pytest.raises(GraphError, match="more than one parent"):
        _problem(2, 1, [], pinned_src=[0, 1], pinned_dst=[0, 0])
    with pytest.raises(GraphError, match="more than two children"):
        _problem(1, 3, [], pinned_src=[0, 0, 0], pinned_dst=[0, 1, 2])
    with pytest.raises(InputError, match="finite"):
        _problem(1, 1, [(0, 0, INF)])
    with pytest.raises(InputError, match="edge_dst must index"):
        _problem(1, 1, [(0, 3, 1.0)])


def test_empty_problems():
    assert solve_assignment(_problem(0, 0, [])).cost == 0.0
    result = solve_assignment(_problem(3, 0, [], disappear=2.0))
    assert len(result.src) == 0 and result.cost == pytest.approx(6.0)
    result = solve_assignment(_problem(0, 2, [], appear=1.5))
    assert result.cost == pytest.approx(3.0)


def test_repeated_edges_keep_the_cheapest():
    p = _problem(1, 1, [(0, 0, 5.0), (0, 0, 0.5)], appear=1.0, disappear=1.0)
    result = solve_assignment(p)
    assert _edges(result) == {(0, 0)} and result.cost == pytest.approx(0.5)


# ----------------------------------------------------------------------------- brute force
def _reference_cost(p: AssignmentProblem, parent: list[int]) -> float:
    """Objective written plainly from the definition (independent of assignment_cost)."""
    pinned = dict(zip(p.pinned_dst.tolist(), p.pinned_src.tolist(), strict=True))
    edges: dict[tuple[int, int], float] = {}
    for s, d, c in zip(p.edge_src.tolist(), p.edge_dst.tolist(), p.edge_cost.tolist(), strict=True):
        edges[(s, d)] = min(c, edges.get((s, d), INF))
    total = 0.0
    free_children = [0] * p.n_sources
    for j, s in enumerate(parent):
        if j in pinned:
            if s != pinned[j]:
                return INF
            continue
        if s < 0:
            if not p.fixed_parent[j]:
                total += p.appear_cost[j]
            continue
        if p.fixed_parent[j] or (s, j) not in edges:
            return INF
        total += edges[(s, j)]
        free_children[s] += 1
    for i in range(p.n_sources):
        before = int(p.fixed_children[i]) + p.pinned_src.tolist().count(i)
        after = before + free_children[i]
        if after > 2:
            return INF
        if after == 2 and free_children[i] > 0:
            if not np.isfinite(p.division_cost[i]):
                return INF
            total += p.division_cost[i]
        if after == 0:
            total += p.disappear_cost[i]
    return total


def _brute_force(p: AssignmentProblem) -> float:
    options = [[-1, *range(p.n_sources)] for _ in range(p.n_targets)]
    return min(_reference_cost(p, list(choice)) for choice in itertools.product(*options))


def _random_problem(rng: np.random.Generator) -> AssignmentProblem:
    n_s = int(rng.integers(1, 5))
    n_t = int(rng.integers(1, 6))
    pairs = [(i, j) for i in range(n_s) for j in range(n_t) if rng.random() < 0.6]
    costs = rng.exponential(1.0, len(pairs))
    if rng.random() < 0.3:
        costs = np.round(costs, 1)  # ties
    division = np.where(rng.random(n_s) < 0.5, rng.exponential(0.7, n_s), INF)
    # pins: a random valid set
    pin_src, pin_dst, children = [], [], [0] * n_s
    for j in range(n_t):
        if rng.random() < 0.2:
            i = int(rng.integers(n_s))
            if children[i] < 2:
                pin_src.append(i)
                pin_dst.append(j)
                children[i] += 1
    fixed_parent = np.zeros(n_t, bool)
    free_targets = [j for j in range(n_t) if j not in pin_dst]
    for j in free_targets:
        fixed_parent[j] = rng.random() < 0.1
    fixed_children = np.array([min(int(rng.random() < 0.1), 2 - c) for c in children])
    return AssignmentProblem(
        n_sources=n_s,
        n_targets=n_t,
        edge_src=[a for a, _ in pairs],
        edge_dst=[b for _, b in pairs],
        edge_cost=costs,
        division_cost=division,
        appear_cost=rng.uniform(0.2, 2.5, n_t),
        disappear_cost=rng.uniform(0.2, 2.5, n_s),
        pinned_src=pin_src,
        pinned_dst=pin_dst,
        fixed_children=fixed_children,
        fixed_parent=fixed_parent,
    )


def test_optimal_against_brute_force_on_random_problems():
    rng = np.random.default_rng(1234)
    for _ in range(300):
        p = _random_problem(rng)
        result = solve_assignment(p)
        parent = [-1] * p.n_targets
        for s, d in zip(result.src.tolist(), result.dst.tolist(), strict=True):
            assert parent[d] == -1, "a target got two parents"
            parent[d] = s
        # the solution is valid, its reported cost is right, and nothing is cheaper
        assert result.cost == pytest.approx(_reference_cost(p, parent))
        assert result.cost == pytest.approx(assignment_cost(p, result.src, result.dst))
        assert result.cost == pytest.approx(_brute_force(p), abs=1e-9)
        assert np.all(result.n_children <= 2)


def test_assignment_cost_flags_invalid_solutions():
    p = _problem(1, 2, [(0, 0, 0.1), (0, 1, 0.2)], pinned_src=[], pinned_dst=[])
    assert assignment_cost(p, [0, 0], [0, 1]) == INF  # division not allowed
    assert assignment_cost(p, [0], [1]) == pytest.approx(0.2 + 1.0)
    q = _problem(2, 1, [(0, 0, 0.1), (1, 0, 0.1)])
    assert assignment_cost(q, [0, 1], [0, 0]) == INF  # two parents
