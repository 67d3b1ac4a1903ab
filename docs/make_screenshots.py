"""Render screenshots of each micro-seg widget docked beside a real micrograph.

Run under a display (``xvfb-run -a python docs/make_screenshots.py``); writes
``docs/screenshots/<widget>.png``.  Every widget is driven as a user would
(pick layers, press its button, wait for the worker), on the shipped NIST
ferritic-steel micrograph (real, 0.2252 µm/px) and, for phases, the NASA
superalloy SEM image.  Uses the shipped models when they are installed;
otherwise the Segment step is shown with the grains traced by hand by NIST.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "screenshots"
WINDOW = (1680, 1000)


def _wait(app, done, timeout=900.0) -> None:
    t0 = time.perf_counter()
    while not done():
        app.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("widget job did not finish")
    for _ in range(5):
        app.processEvents()
        time.sleep(0.05)


def _viewer(title: str):
    import napari

    viewer = napari.Viewer(title=f"micro-seg - {title}", show=True)
    viewer.window.resize(*WINDOW)
    viewer.window._qt_window.move(0, 0)
    return viewer


def _dock(viewer, widget, name: str, width: int = 470):
    dock = viewer.window.add_dock_widget(widget, name=name, area="right")
    dock.setMinimumWidth(width)
    return dock


def _open_sample(viewer, key: str):
    viewer.open_sample("micro-seg", key)
    return [l for l in viewer.layers]


def _shot(viewer, app, name: str, *, reset: bool = True) -> Path:
    if reset:
        viewer.reset_view()
    for _ in range(10):
        app.processEvents()
        time.sleep(0.05)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")
    return path


def _model(name: str) -> str | None:
    from micro_seg.registry import ModelError, resolve_model

    try:
        return str(resolve_model(name))
    except ModelError:
        return None


def _grains_from_truth(viewer, image_layer):
    """NIST's hand-traced boundaries -> grain labels (engine function), as a stand-in result."""
    from micro_seg.measure import labels_from_boundaries

    truth = viewer.layers[f"{image_layer.name} truth"]
    labels = labels_from_boundaries(np.asarray(truth.data) > 0)
    labels = labels[0] if isinstance(labels, tuple) else labels
    px = image_layer.metadata["micro_seg"]["pixel_size_um"]
    return viewer.add_labels(np.asarray(labels), name=f"{image_layer.name} grains", scale=(px, px), opacity=0.45,
                             metadata={"micro_seg": {"kind": "grains", "pixel_size_um": px,
                                                     "image": image_layer.name, "classes": ["grain", "boundary"]}})


def segment_shot(app) -> Path:
    from napari_plugin._segment import SegmentWidget

    viewer = _viewer("Segment")
    image = _open_sample(viewer, "nist-steel")[0]
    w = SegmentWidget(viewer)
    _dock(viewer, w, "Segment")
    model = _model("grain-boundaries")
    if model:
        w.select_model(model)
        w.run()
        _wait(app, lambda: not w.busy)
    else:
        _grains_from_truth(viewer, image)
    viewer.layers[f"{image.name} truth"].visible = False
    path = _shot(viewer, app, "segment")
    viewer.close()
    return path


def measure_shot(app) -> Path:
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._segment import SegmentWidget

    viewer = _viewer("Measure")
    image = _open_sample(viewer, "nist-steel")[0]
    model = _model("grain-boundaries")
    if model:
        seg = SegmentWidget(viewer)
        seg.select_model(model)
        seg.run()
        _wait(app, lambda: not seg.busy)
        grains = viewer.layers[f"{image.name} grains"]
    else:
        grains = _grains_from_truth(viewer, image)
    w = MeasureWidget(viewer)
    _dock(viewer, w, "Measure", width=520)
    w.reset_choices()
    w._labels.value = grains
    w.run()
    _wait(app, lambda: not w._runner.running)
    w._hist_col.value = "ecd_um" if "ecd_um" in w._hist_col.choices else w._hist_col.value
    # select the largest grain, as a user clicking the table would
    w.select_row(int(np.argmax(w.table["area_px"].to_numpy())))
    path = _shot(viewer, app, "measure")
    viewer.close()
    return path


def annotate_shot(app) -> tuple[Path, object, object]:
    from napari_plugin._annotate import AnnotateWidget

    viewer = _viewer("Annotate")
    layers = _open_sample(viewer, "nist-steel")
    image, truth = layers[0], layers[1]
    w = AnnotateWidget(viewer)
    _dock(viewer, w, "Annotate")
    w._image.value = image
    w._classes.value = "grain, boundary"
    ann = w.new_annotation_layer()
    w._sp_size.value = 10
    w._sp_mode.value = True
    _wait(app, lambda: not w._runner.running)
    # a user's clicks: superpixels inside grains -> "grain", strokes along traced boundaries -> "boundary"
    rng = np.random.default_rng(0)
    bnd = np.asarray(truth.data) > 0
    rows, cols = np.nonzero(~bnd[:, :260])
    for i in rng.choice(rows.size, 40, replace=False):
        ann.selected_label = 1
        w.fill_superpixel_at(rows[i], cols[i])
    br, bc = np.nonzero(bnd[:, :260])
    keep = rng.random(br.size) < 0.35
    ann.data_setitem((br[keep], bc[keep]), 2)
    ann.selected_label = 2
    ann.mode = "paint"
    w._folder.value = str(Path(tempfile.gettempdir()) / "micro-seg-training")
    w._status.value = "40 superpixels + boundary strokes; Save, then Train"
    path = _shot(viewer, app, "annotate")
    data = (np.asarray(image.data), np.asarray(ann.data))
    viewer.close()
    return path, data


def train_shot(app, image: np.ndarray, annotations: np.ndarray) -> Path:
    from napari_plugin._layers import class_colormap
    from napari_plugin._train import TrainWidget

    viewer = _viewer("Train")
    layers = _open_sample(viewer, "nist-steel")
    layers[1].visible = False
    ann = viewer.add_labels(annotations, name=f"{layers[0].name} annotations", scale=layers[0].scale, opacity=0.6,
                            colormap=class_colormap(2),
                            metadata={"micro_seg": {"kind": "annotations", "classes": ["grain", "boundary"]}})
    w = TrainWidget(viewer)
    _dock(viewer, w, "Train")
    w.reset_choices()
    w._image.value, w._annotations.value = layers[0], ann
    base = _model("grain-boundaries")
    if base:
        w._base.value = base
    w._name.value = "nist-steel-finetuned"
    w._epochs.value = 4
    w._minutes.value = 1.5
    w._patch.value = 128
    w.train()
    _wait(app, lambda: not w._runner.running)
    path = _shot(viewer, app, "train")
    viewer.close()
    return path


def batch_shot(app) -> Path | None:
    from micro_seg.resources import sample_images_dir
    from napari_plugin._batch import BatchWidget

    model = _model("grain-boundaries")
    if model is None:
        print("batch screenshot skipped: no grain-boundaries model installed", file=sys.stderr)
        return None
    tmp = Path(tempfile.mkdtemp())
    src = tmp / "micrographs" / "steel-A"
    src.mkdir(parents=True)
    for name in ("nist_steel_ferrite_crop.tif", "synthetic_etched_twins.tif", "synthetic_sem_grains.tif"):
        shutil.copy(sample_images_dir() / name, src / name)
    viewer = _viewer("Batch")
    w = BatchWidget(viewer)
    _dock(viewer, w, "Batch", width=560)
    w._in.value, w._out.value = str(tmp / "micrographs"), str(tmp / "results")
    w._model.value = model
    w._workers.value = 1
    w.run()
    _wait(app, lambda: not w._runner.running)
    if w.images is not None:
        row = int(np.flatnonzero(w.images["path"].astype(str).str.contains("nist"))[0])
        w.table_view.selectRow(row)
        w.open_row(row)
    path = _shot(viewer, app, "batch")
    viewer.close()
    return path


def phases_shot(app) -> Path | None:
    """ni-superalloy model on the NASA SEM image, then phase fractions in the Measure widget."""
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._segment import SegmentWidget

    model = _model("ni-superalloy")
    if model is None:
        print("phases screenshot skipped: no ni-superalloy model installed", file=sys.stderr)
        return None
    viewer = _viewer("Segment + Measure phases")
    image = _open_sample(viewer, "nasa-superalloy")[0]
    seg = SegmentWidget(viewer)
    meas = MeasureWidget(viewer)
    _dock(viewer, seg, "Segment")
    _dock(viewer, meas, "Measure", width=520)
    seg.select_model(model)
    seg.run()
    _wait(app, lambda: not seg.busy)
    meas.reset_choices()
    meas._labels.value = viewer.layers[f"{image.name} classes"]
    meas.run()
    _wait(app, lambda: not meas._runner.running)
    path = _shot(viewer, app, "segment_measure_phases")
    viewer.close()
    return path


def gui_shot(app) -> Path:
    """The window ``micro-seg gui sample_images/nist_steel_ferrite_crop.tif`` opens (all widgets tabbed)."""
    from micro_seg.commands.gui import open_viewer
    from micro_seg.resources import sample_images_dir

    viewer, widgets = open_viewer(str(sample_images_dir() / "nist_steel_ferrite_crop.tif"), show=True)
    viewer.window.resize(*WINDOW)
    seg = widgets["Segment"]
    model = _model("grain-boundaries")
    if model:
        seg.select_model(model)
        seg.run()
        _wait(app, lambda: not seg.busy)
    path = _shot(viewer, app, "gui")
    viewer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="subset of: gui phases segment measure annotate train batch")
    args = parser.parse_args(argv)
    import os

    # models trained for the Train screenshot go to a scratch folder, not the user's model folder
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="micro-seg-shots-")
    import napari  # noqa: F401
    from qtpy.QtWidgets import QApplication

    from napari_plugin._common import avoid_triton_crash

    napari.Viewer(show=False).close()  # create the QApplication
    app = QApplication.instance()
    avoid_triton_crash()
    want = set(args.only or ["gui", "phases", "segment", "measure", "annotate", "train", "batch"])
    if "gui" in want:
        gui_shot(app)
    if "phases" in want:
        phases_shot(app)
    if "segment" in want:
        segment_shot(app)
    if "measure" in want:
        measure_shot(app)
    if want & {"annotate", "train"}:
        _, (image, ann) = annotate_shot(app)
        if "train" in want:
            train_shot(app, image, ann)
    if "batch" in want:
        batch_shot(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
