"""TrackingSession: lazy autosave, saving, dirty state and restoring a journal (no Qt)."""

from __future__ import annotations

import pandas as pd

from napari_cellect.data.export import write_csv
from napari_cellect.session import TrackingSession
from napari_cellect.track import edits
from napari_cellect.track.journal import Journal, journal_folder_for


def snapshot(graph) -> pd.DataFrame:
    return graph.to_dataframe().sort_values("id").reset_index(drop=True)


def test_opening_writes_nothing_and_the_first_edit_starts_the_journal(tmp_path, graph):
    path = tmp_path / "tracks.csv"
    write_csv(graph, path)
    session = TrackingSession.open_tracks(path)
    folder = journal_folder_for(path)
    assert session.journal_folder == folder and not folder.exists()
    assert not session.dirty
    session.ensure_journal()
    session.history.do(edits.approve, [2])
    assert Journal.exists(folder) and session.dirty
    session.save()
    assert not session.dirty
    session.close()  # nothing unsaved: the journal goes away
    assert not folder.exists()


def test_unsaved_edits_survive_a_closed_session_and_are_offered_back(tmp_path, graph):
    path = tmp_path / "tracks.csv"
    write_csv(graph, path)
    session = TrackingSession.open_tracks(path)
    session.ensure_journal()
    session.history.do(edits.break_link, 7)
    session.history.do(edits.delete_node, 2)
    session.history.undo()
    expected = snapshot(session.graph)
    session.close()  # closed without saving: journal kept
    asked = []
    restored = TrackingSession.open_tracks(path, ask_restore=lambda f: asked.append(f) or True)
    assert asked == [journal_folder_for(path)]
    pd.testing.assert_frame_equal(snapshot(restored.graph), expected)
    assert restored.history.can_redo and restored.dirty
    restored.history.redo()  # the restored history keeps going, and keeps being journalled
    assert not restored.graph.has(2)
    restored.close()
    again = TrackingSession.open_tracks(path, ask_restore=lambda f: True)
    assert not again.graph.has(2)


def test_declining_the_restore_discards_the_journal(tmp_path, graph):
    path = tmp_path / "tracks.csv"
    write_csv(graph, path)
    session = TrackingSession.open_tracks(path)
    session.ensure_journal()
    session.history.do(edits.approve, [2])
    session.close()
    fresh = TrackingSession.open_tracks(path, ask_restore=lambda f: False)
    assert not fresh.graph.node(2)["approved"]
    assert not journal_folder_for(path).exists()


def test_session_without_a_file_journals_under_the_default_root(journal_root, graph):
    session = TrackingSession.from_graph(graph, name="run 1")
    assert session.dirty  # a result never saved is unsaved
    session.ensure_journal()
    assert session.journal_folder.parent == journal_root
    assert (session.journal_folder / "base.csv").is_file()


def test_moving_the_journal_writes_a_new_base(tmp_path, graph):
    session = TrackingSession.from_graph(graph, name="run")
    session.ensure_journal()
    session.history.do(edits.approve, [2])
    session.move_journal(tmp_path / "mine.cellect-journal")
    session.history.do(edits.approve, [3])
    restored = TrackingSession.open_journal(tmp_path / "mine.cellect-journal")
    assert restored.graph.node(2)["approved"] and restored.graph.node(3)["approved"]
