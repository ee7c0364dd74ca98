"""Property-based tests (hypothesis): what holds for any graph and any sequence of edits.

- every edit leaves a valid TrackGraph (unique ids >= 0, parents in earlier frames, at most two
  children); an edit that is refused leaves the graph exactly as it was;
- undoing any sequence gives back the exact starting state, redoing it the exact end state;
- replaying the journal gives the live state;
- CSV and GEFF round trips keep every node, link and value;
- the linker never gives a node three children, and keeps every pinned edge;
- a re-link's one edit turns any graph into any other, undoes and replays exactly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_cellect.data.annotations import read_csv, read_geff
from napari_cellect.data.export import write_csv, write_geff
from napari_cellect.errors import GraphError
from napari_cellect.session.graph_replace import replace_command
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.track import edits
from napari_cellect.track.detections import Detections
from napari_cellect.track.edits import History
from napari_cellect.track.graph import CSV_COLUMNS, TrackGraph
from napari_cellect.track.journal import Journal, restore
from napari_cellect.track.link import link_sequence

FAST = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COORD = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=64)


@st.composite
def graphs(draw, max_nodes: int = 14, max_frames: int = 5) -> TrackGraph:
    """Any valid graph: nodes in frames 0..max_frames-1, each linked (or not) to a node of an
    earlier frame that has fewer than two children; ids sparse and unordered."""
    n = draw(st.integers(0, max_nodes))
    t = sorted(draw(st.lists(st.integers(0, max_frames - 1), min_size=n, max_size=n)))
    ids = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    parents, children = [], {}
    for i in range(n):
        earlier = [j for j in range(i) if t[j] < t[i] and children.get(j, 0) < 2]
        j = draw(st.sampled_from([None, *earlier]))
        parents.append(-1 if j is None else ids[j])
        if j is not None:
            children[j] = children.get(j, 0) + 1
    floats = st.lists(COORD, min_size=n, max_size=n)
    unit = st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)
    graph = TrackGraph.from_arrays(
        id=ids,
        t=t,
        z=draw(floats),
        y=draw(floats),
        x=draw(floats),
        parent_id=parents,
        radius=draw(st.lists(st.floats(0.5, 50, width=32), min_size=n, max_size=n)),
        score=draw(unit),
        division_score=draw(unit),
        link_score=[draw(st.floats(0, 1, width=32)) if p != -1 else np.nan for p in parents],
        approved=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    )
    order = draw(st.permutations(range(n)))  # rows in any order
    return TrackGraph.from_dataframe(graph.to_dataframe().iloc[list(order)])


#: (action, how many node picks it takes); "undo" and "redo" act on the history
ACTIONS = {
    "link": 2,
    "break_link": 1,
    "delete_node": 1,
    "add_node": 1,
    "mark_division": 1,
    "unmark_division": 1,
    "swap_parents": 2,
    "approve": 1,
    "approve_track": 1,
    "undo": 0,
    "redo": 0,
}
steps = st.lists(
    st.tuples(
        st.sampled_from(sorted(ACTIONS)),
        st.lists(st.integers(0, 1000), min_size=2, max_size=2),
        st.tuples(COORD, COORD, COORD),
    ),
    max_size=12,
)


def apply_step(history: History, step) -> None:
    """Run one random user action; refused ones (GraphError) must change nothing."""
    name, picks, position = step
    graph = history.graph
    if name == "undo":
        history.undo()
        return
    if name == "redo":
        history.redo()
        return
    if len(graph) == 0:
        if name == "add_node":
            history.do(edits.add_node, 0, position)
        return
    nodes = [int(graph.ids[p % len(graph)]) for p in picks]
    before = state(graph)
    try:
        if name == "add_node":
            t = int(graph["t"][picks[0] % len(graph)]) + 1
            history.do(edits.add_node, t, position, parent=nodes[0])
        elif name == "unmark_division":
            history.do(edits.mark_division, nodes[0], False)
        elif name == "approve":
            history.do(edits.approve, [nodes[0]])
        elif ACTIONS[name] == 2:
            history.do(getattr(edits, name), nodes[0], nodes[1])
        else:
            history.do(getattr(edits, name), nodes[0])
    except GraphError:
        assert_same(state(graph), before)


def state(graph: TrackGraph) -> dict[str, np.ndarray]:
    """Every column (with the derived track ids), rows sorted by id: the exact state.

    Row order is not part of it: undoing a deletion appends the node's row again (as the
    Points layer appends its point), so only the order of rows may differ.
    """
    order = np.argsort(graph.ids, kind="stable")
    out = {name: np.array(graph[name])[order] for name in graph.columns}
    out["track_id"] = graph.track_ids()[order]
    out["parent_track_id"] = graph.parent_track_ids()[order]
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def assert_valid(graph: TrackGraph) -> None:
    graph.validate()
    ids = graph.ids
    assert len(np.unique(ids)) == len(ids) and (ids >= 0).all()
    assert (graph.n_children() <= 2).all()
    edges = graph.edges()
    if len(edges):
        t = graph["t"]
        assert (t[graph.index_of(edges[:, 0])] < t[graph.index_of(edges[:, 1])]).all()


def by_id(graph: TrackGraph) -> pd.DataFrame:
    return graph.to_dataframe().sort_values("id").reset_index(drop=True)


@FAST
@given(graph=graphs(), sequence=steps)
def test_every_edit_keeps_the_graph_valid(graph, sequence):
    history = History(graph)
    for step in sequence:
        apply_step(history, step)
        assert_valid(history.graph)


@FAST
@given(graph=graphs(), sequence=steps)
def test_undo_all_gives_the_exact_start_and_redo_all_the_exact_end(graph, sequence):
    start = state(graph)
    history = History(graph)
    for step in sequence:
        apply_step(history, step)
    end = state(history.graph)
    n_done = len(history.done)
    for _ in range(n_done):
        history.undo()
    assert not history.can_undo
    assert_same(state(history.graph), start)
    for _ in range(n_done):
        history.redo()
    assert_same(state(history.graph), end)


@FAST
@given(graph=graphs(), sequence=steps)
def test_journal_replay_equals_the_live_state(graph, sequence):
    with tempfile.TemporaryDirectory() as folder:
        history = History(graph)
        journal = Journal(Path(folder) / "session.cellect-journal")
        journal.start(history)
        for step in sequence:
            apply_step(history, step)
        replayed = restore(journal.folder)
        journal.close()
    pd.testing.assert_frame_equal(by_id(replayed.graph), by_id(history.graph))
    assert len(replayed.done) == len(history.done)
    # the replayed history undoes to the same base
    while history.undo() is not None:
        replayed.undo()
    pd.testing.assert_frame_equal(by_id(replayed.graph), by_id(history.graph))


@FAST
@given(graph=graphs())
def test_csv_round_trip_is_lossless(graph):
    """Every column of the CSV format comes back exactly; ``score`` (detection confidence) is
    not one of them unless asked for with ``extra``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tracks.csv"
        write_csv(graph, path)
        plain = read_csv(path)
        write_csv(graph, path, extra=["score"])
        full = read_csv(path)
    columns = list(CSV_COLUMNS)
    pd.testing.assert_frame_equal(by_id(plain)[columns], by_id(graph)[columns])
    pd.testing.assert_frame_equal(by_id(full), by_id(graph))


@settings(FAST, max_examples=10)  # a GEFF is a zarr folder of fsynced files: slow to write
@given(graph=graphs())
def test_geff_round_trip_is_lossless(graph):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tracks.geff"
        write_geff(graph, path)
        again = read_geff(path)
    expected = by_id(graph)
    got = by_id(again)[list(expected.columns)]
    pd.testing.assert_frame_equal(got, expected)


@st.composite
def linking_inputs(draw):
    """Detections in 2-4 frames of up to 6 cells (often crowded, so that divisions and
    conflicts are likely), and pinned edges forming a valid forest."""
    n_frames = draw(st.integers(2, 4))
    frames, ids, next_id = [], [], 0
    for t in range(n_frames):
        n = draw(st.integers(0, 6))
        positions = np.array(
            draw(st.lists(st.tuples(*[st.floats(0, 12, width=32)] * 3), min_size=n, max_size=n)),
            np.float64,
        ).reshape(n, 3)
        division = np.array(
            draw(
                st.lists(
                    st.tuples(st.floats(0, 1, width=32), st.floats(0, 1, width=32)),
                    min_size=n,
                    max_size=n,
                )
            ),
            np.float32,
        ).reshape(n, 2)
        frames.append(
            Detections(
                t=t,
                positions=positions,
                embeddings=np.zeros((n, 4), np.float32),
                radius=np.full(n, 2.0, np.float32),
                division=division,
                score=np.ones(n, np.float32),
            )
        )
        ids.append(np.arange(next_id, next_id + n))
        next_id += n
    frame_of = {int(i): t for t, frame_ids in enumerate(ids) for i in frame_ids}
    pins, parent_taken, children = [], set(), {}
    for child in draw(st.lists(st.sampled_from(sorted(frame_of) or [0]), max_size=4, unique=True)):
        if child not in frame_of:
            continue
        earlier = [p for p, t in frame_of.items() if t < frame_of[child] and children.get(p, 0) < 2]
        parent = draw(st.sampled_from([-1, *earlier]))
        if child in parent_taken:
            continue
        parent_taken.add(child)
        pins.append((parent, child))
        if parent != -1:
            children[parent] = children.get(parent, 0) + 1
    return frames, pins


@FAST
@given(inputs=linking_inputs(), division_threshold=st.floats(0, 1), gap_closing=st.booleans())
def test_the_linker_never_makes_three_children_and_keeps_every_pin(
    inputs, division_threshold, gap_closing
):
    frames, pins = inputs
    config = LinkingConfig(division_threshold=division_threshold, gap_closing=gap_closing)
    graph = link_sequence(frames, None, config, 1.0, pinned_edges=pins or None)
    assert_valid(graph)
    assert len(graph) == sum(len(f) for f in frames)
    for parent, child in pins:
        assert graph.parent_of(child) == parent
        assert graph["approved"][graph.index_of(child)[0]]


@settings(FAST, max_examples=40)
@given(old=graphs(), new=graphs())
def test_a_re_link_replaces_any_graph_by_any_other_and_undoes_exactly(old, new):
    """The one edit a re-link makes (``session.graph_replace``): the live graph becomes the new
    one, undo gives back the exact start, redo the exact end, and the journal replays it."""
    start = state(old)
    with tempfile.TemporaryDirectory() as folder:
        history = History(old)
        journal = Journal(Path(folder) / "session.cellect-journal")
        journal.start(history)
        history.execute(replace_command(old, new, "re-link"))
        assert_valid(history.graph)
        pd.testing.assert_frame_equal(by_id(history.graph), by_id(new))
        replayed = restore(journal.folder)
        journal.close()
    pd.testing.assert_frame_equal(by_id(replayed.graph), by_id(new))
    history.undo()
    assert_same(state(history.graph), start)
    history.redo()
    assert_same(state(history.graph), state(new))
