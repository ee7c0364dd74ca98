"""Write real screenshots of the napari-cellect widgets to docs/screenshots/.

Opens the synthetic-embryo sample in a 1920 x 1080 napari window, docks all five widgets from
the Plugins menu (they form one tab group), and for each brings its tab to the front and saves
the whole window plus the widget's panel on its own. Run it under a display, e.g.

    xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/make_screenshots.py

The tracking widget is run with the bundled model when it is installed; otherwise it is shown
ready to run (no result is faked). The fine-tune widget shows the corrections made here (a track
approved, a link broken) and the review count; with the bundled model it fine-tunes on them and
re-links the tracking result, otherwise it shows that the ground truth has no detections.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("make_screenshots")

ROOT = Path(__file__).resolve().parents[1]
WINDOW_SIZE = (1920, 1080)
#: the widgets, as named in the Plugins > CELLECT tracking menu
WIDGETS = ("Track cells", "Edit tracks", "Lineage view", "Export tracks", "Fine-tune")
#: frame shown in the screenshots (mid-sequence: tracks have tails and daughters)
SHOW_FRAME = 7
#: camera angles of the 3D overview (degrees), tilted so depth is visible
CAMERA_ANGLES_3D = (-20.0, 35.0, 110.0)


def _process(seconds: float = 0.3) -> None:
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
    controller.edits.approve_track_selected()
    controller.select([int(linked[-1])])
    controller.edits.break_selected()


def _wait_until_idle(widget, settle_s: float = 3.0) -> None:
    """Process events until ``widget`` has run no job for ``settle_s`` (a follow-up job, such
    as the re-link after an adopted fine-tune, starts a moment after the first one ends)."""
    quiet_since = None
    while True:
        _process(0.2)
        if widget.running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > settle_s:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import napari
    from qtpy.QtWidgets import QScrollArea

    import napari_cellect.session.tracking_session as session_module
    from napari_cellect._napari._controller import controller_for
    from napari_cellect._napari._tracking_widget import BUNDLED_MODEL

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

    docked = {
        name: viewer.window.add_plugin_dock_widget("napari-cellect", name)[1] for name in WIDGETS
    }
    _process()

    def shoot(name: str, widget=None) -> None:
        if widget is not None:
            widget.parentWidget().raise_()  # its tab to the front
        _process()
        viewer.screenshot(str(args.out / f"{name}_window.png"), canvas_only=False, flash=False)
        if widget is not None:  # the whole panel, also what is scrolled out of view
            widget.findChild(QScrollArea).widget().grab().save(str(args.out / f"{name}.png"))
        logger.info("wrote %s", args.out / f"{name}_window.png")

    # the editor with a node selected (its track, parent and children are listed)
    editor = docked["Edit tracks"]
    middle = graph.frame(SHOW_FRAME)
    node = int(graph.ids[middle[np.argmax(graph["parent_id"][middle] >= 0)]])
    controller.select([node], center=False)
    shoot("editor_widget", editor)

    lineage = docked["Lineage view"]
    lineage.parentWidget().raise_()
    _process()
    lineage.canvas.fit()
    shoot("lineage_view", lineage)

    export = docked["Export tracks"]
    export.set_format("ctc")
    shoot("export_widget", export)

    tracking = docked["Track cells"]
    tracking.set_image_layer(viewer.layers["synthetic embryo"])
    if BUNDLED_MODEL.exists():
        tracking.run()
        while tracking.running:
            _process(0.2)
    shoot("tracking_widget", tracking)

    # fine-tune on a few corrections of the active tracks (the tracking result, if any)
    finetune = docked["Fine-tune"]
    _correct(controller)
    if controller.session.detections:
        finetune.fine_tune()  # then re-links if the tuned model is adopted (the box is checked)
        _wait_until_idle(finetune)
    finetune.update_counts()
    shoot("finetune_widget", finetune)

    # 3D view of the tracks with all widgets docked together
    lineage.parentWidget().raise_()
    viewer.dims.ndisplay = 3
    viewer.layers["synthetic embryo"].visible = False
    if controller.session is not None and controller.session.name.endswith("tracked"):
        for name in ("embryo ground truth centres", "embryo ground truth tracks"):
            viewer.layers[name].visible = False  # the result alone, once there is one
    viewer.reset_view()
    viewer.scene.camera.angles = CAMERA_ANGLES_3D
    shoot("overview_3d")
    viewer.close()


if __name__ == "__main__":
    main()
