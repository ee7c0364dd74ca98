"""Write real screenshots of the napari-cellect widgets to docs/screenshots/.

Opens the synthetic-embryo sample in a napari window, docks each widget, and saves the whole
window plus each widget on its own. Run it under a display, e.g.

    xvfb-run -a -s "-screen 0 1600x1100x24" python scripts/make_screenshots.py

The tracking widget is run with the bundled model when it is installed; otherwise it is shown
ready to run (no result is faked). The fine-tune widget shows the corrections made here (a track
approved, a link broken) and the review count; with the bundled model it fine-tunes on them and
re-links the tracking result, otherwise it shows that the ground truth has no detections.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger("make_screenshots")

ROOT = Path(__file__).resolve().parents[1]
WINDOW_SIZE = (1500, 1000)
#: frame shown in the screenshots (mid-sequence: tracks have tails and daughters)
SHOW_FRAME = 7
#: camera angles of the 3D overview (degrees), tilted so depth is visible
CAMERA_ANGLES_3D = (-20.0, 35.0, 110.0)


def _process(seconds: float = 0.3) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()


def _correct(controller) -> None:
    """What a person does first: approve a whole track, break a link of another one."""
    graph = controller.session.graph
    linked = graph.ids[graph["parent_id"] >= 0]
    if len(linked) < 2:
        return
    controller.select([int(linked[0])])
    controller.approve_track_selected()
    controller.select([int(linked[-1])])
    controller.break_selected()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import napari

    import napari_cellect._napari._session as session_module
    from napari_cellect._napari._controller import controller_for
    from napari_cellect._napari._editor_widget import EditorWidget
    from napari_cellect._napari._export_widget import ExportWidget
    from napari_cellect._napari._finetune_widget import FinetuneWidget
    from napari_cellect._napari._lineage_widget import LineageWidget
    from napari_cellect._napari._tracking_widget import BUNDLED_MODEL, TrackingWidget

    journal_root = Path(tempfile.mkdtemp(prefix="cellect-shots-"))
    session_module.default_journal_root = lambda: journal_root  # no autosave in the user's folder

    viewer = napari.Viewer(show=True, title="napari-cellect")
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    viewer.open_sample("napari-cellect", "synthetic_embryo")
    controller = controller_for(viewer)
    graph = controller.session.graph
    viewer.dims.set_point(0, SHOW_FRAME)
    z_slice = float(np.median(graph["z"][graph.frame(SHOW_FRAME)]))
    viewer.dims.set_point(1, z_slice * controller.session.geometry.scale[0])
    viewer.reset_view()

    def shoot(name: str, widget=None) -> None:
        _process()
        viewer.screenshot(str(args.out / f"{name}_window.png"), canvas_only=False, flash=False)
        if widget is not None:
            widget.grab().save(str(args.out / f"{name}.png"))
        logger.info("wrote %s", args.out / f"{name}_window.png")

    # the editor with a node selected (its track, parent and children are listed)
    editor = EditorWidget(viewer)
    dock = viewer.window.add_dock_widget(editor, name="Edit tracks", area="right")
    middle = graph.frame(SHOW_FRAME)
    node = int(graph.ids[middle[np.argmax(graph["parent_id"][middle] >= 0)]])
    controller.select([node], center=False)
    shoot("editor_widget", editor)
    viewer.window.remove_dock_widget(dock)

    lineage = LineageWidget(viewer)
    dock = viewer.window.add_dock_widget(lineage, name="Lineage view", area="right")
    _process()
    lineage.canvas.fit()
    shoot("lineage_view", lineage)
    viewer.window.remove_dock_widget(dock)

    export = ExportWidget(viewer)
    dock = viewer.window.add_dock_widget(export, name="Export tracks", area="right")
    export.set_format("ctc")
    shoot("export_widget", export)
    viewer.window.remove_dock_widget(dock)

    tracking = TrackingWidget(viewer)
    dock = viewer.window.add_dock_widget(tracking, name="Track cells", area="right")
    tracking.set_image_layer(viewer.layers["synthetic embryo"])
    if BUNDLED_MODEL.exists():
        tracking.run()
        while tracking.running:
            _process(0.2)
    shoot("tracking_widget", tracking)
    viewer.window.remove_dock_widget(dock)

    # fine-tune on a few corrections of the active tracks (the tracking result, if any)
    finetune = FinetuneWidget(viewer)
    dock = viewer.window.add_dock_widget(finetune, name="Fine-tune", area="right")
    _correct(controller)
    if controller.session.detections:
        finetune.fine_tune()  # then re-links (the box is checked)
        while finetune.running or (finetune.relink_after.isChecked() and
                                   finetune.relink_command is None and
                                   "failed" not in finetune.message_label.text()):
            _process(0.2)
    finetune.update_counts()
    shoot("finetune_widget", finetune)
    viewer.window.remove_dock_widget(dock)

    # 3D view of the tracks with all widgets docked together
    for widget, name in ((EditorWidget(viewer), "Edit tracks"), (LineageWidget(viewer), "Lineage")):
        viewer.window.add_dock_widget(widget, name=name, area="right")
    viewer.dims.ndisplay = 3
    viewer.layers["synthetic embryo"].visible = False
    viewer.reset_view()
    viewer.scene.camera.angles = CAMERA_ANGLES_3D
    shoot("overview_3d")
    viewer.close()


if __name__ == "__main__":
    main()
