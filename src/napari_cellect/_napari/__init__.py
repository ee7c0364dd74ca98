"""napari front end of napari-cellect: everything that imports napari or Qt lives here.

napari loads the pieces through the npe2 manifest (``napari.yaml``): the reader and writers,
the sample data and five dock widgets (Track cells, Edit tracks, Lineage view, Export tracks,
Fine-tune).
From Python, :func:`controller_for` gives a viewer's track editor, which shows
:class:`napari_cellect.session.TrackingSession` objects (a TrackGraph with its undo history and
autosave journal)::

    from napari_cellect._napari import controller_for
    from napari_cellect.session import TrackingSession

    controller = controller_for(viewer)
    controller.add_session(TrackingSession.from_graph(graph, name="result"))

Names are imported lazily, so importing this package does not import Qt.
"""

from __future__ import annotations

from napari_cellect.lazy_exports import LazyExports

_LAZY = LazyExports(
    __name__,
    {
        "CellectController": "._controller",
        "controller_for": "._controller",
        "KEYBINDINGS": "._keybindings",
        "TrackingWidget": "._tracking_widget",
        "EditorWidget": "._editor_widget",
        "LineageWidget": "._lineage_widget",
        "ExportWidget": "._export_widget",
        "FinetuneWidget": "._finetune_widget",
    },
)

__all__ = _LAZY.public
__getattr__ = _LAZY.load
__dir__ = _LAZY.names
