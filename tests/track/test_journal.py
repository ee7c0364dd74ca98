import pandas as pd
import pytest

from napari_cellect.errors import InputError
from napari_cellect.track import edits
from napari_cellect.track.edits import History
from napari_cellect.track.graph import TrackGraph
from napari_cellect.track.journal import Journal, journal_folder_for, restore


def make_graph() -> TrackGraph:
    return TrackGraph.from_arrays(
        id=[1, 2, 3, 4, 5],
        t=[0, 1, 2, 1, 2],
        z=[0.0] * 5,
        y=[1.0, 2, 3, 20, 21],
        x=[1.0, 1, 1, 20, 20],
        parent_id=[-1, 1, 2, -1, 4],
    )


def snapshot(g: TrackGraph) -> pd.DataFrame:
    return g.to_dataframe().sort_values("id").reset_index(drop=True)


def test_restore_replays_edits_undo_and_redo(tmp_path):
    folder = journal_folder_for(tmp_path / "tracks.csv")
    history = History(make_graph())
    journal = Journal(folder)
    journal.start(history, source="tracks.csv")
    history.do(edits.link, 1, 4)
    history.do(edits.delete_node, 2)
    history.do(edits.add_node, 2, (0.0, 9.0, 9.0))
    history.undo()
    history.redo()
    history.do(edits.approve_track, 5)
    history.undo()
    # the "crash": no close(), no save
    assert Journal.exists(folder)
    restored = restore(folder)
    pd.testing.assert_frame_equal(snapshot(restored.graph), snapshot(history.graph))
    assert len(restored.done) == len(history.done) == 3
    assert [c.description for c in restored.undone] == [c.description for c in history.undone]
    assert len(restored.undone) == 1
    # the restored history can keep undoing to the original graph
    while restored.can_undo:
        restored.undo()
    pd.testing.assert_frame_equal(snapshot(restored.graph), snapshot(make_graph()))
    journal.close()


def test_truncated_last_line_is_ignored_but_garbage_is_reported(tmp_path):
    history = History(make_graph())
    journal = Journal(tmp_path / "j")
    journal.start(history)
    history.do(edits.break_link, 2)
    journal.close()
    edits_file = tmp_path / "j" / "edits.jsonl"
    good = edits_file.read_text()
    edits_file.write_text(good + '{"how": "do", "comm')
    assert restore(tmp_path / "j").graph.parent_of(2) == -1
    edits_file.write_text('{"how": "jump"}\n' + good)
    with pytest.raises(InputError, match=r"line 1.*expected do, undo or redo"):
        restore(tmp_path / "j")


def test_restore_without_journal_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no journal here"):
        restore(tmp_path)


def test_discard_removes_the_journal(tmp_path):
    history = History(make_graph())
    journal = Journal(tmp_path / "j")
    journal.start(history)
    history.do(edits.break_link, 2)
    journal.discard()
    assert not (tmp_path / "j").exists()
    history.do(edits.break_link, 5)  # no longer journalled, no error


def test_a_full_disk_stops_the_journal_at_the_last_edit_it_could_write(
    tmp_path, monkeypatch, caplog
):
    """Appending after a missing edit would replay something else: the journal keeps the
    edits up to the failure, says so, and writes nothing more even once space is free."""
    import errno
    import os

    from napari_cellect.track import journal as journal_module

    folder = journal_folder_for(tmp_path / "tracks.csv")
    history = History(make_graph())
    journal = Journal(folder)
    journal.start(history)
    history.do(edits.link, 1, 4)
    history.do(edits.approve_track, 5)
    fsync = os.fsync

    def no_space(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_module.os, "fsync", no_space)
    history.do(edits.delete_node, 2)  # the edit itself is made; its line is written, not synced
    assert not history.graph.has(2)
    last_written = snapshot(history.graph)
    assert journal.error is not None and "No space left on device" in str(journal.error)
    assert "edits made from now on are not autosaved" in caplog.text
    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    history.do(edits.add_node, 2, (0.0, 9.0, 9.0))  # space again: still not appended
    restored = restore(folder)
    pd.testing.assert_frame_equal(snapshot(restored.graph), last_written)
    assert len(restored.done) == 3
