"""Batch widget: run :func:`micro_seg.batch.run_batch` on a folder in the background.

Pick the input and output folders and a model, press Run: the engine's batch
(resumable, worker processes, results database, report) runs in a worker
thread; progress and cancel work as in the other widgets.  When it finishes
(or when you open an existing output folder) the per-image table
(``images.csv``) is shown: clicking a row opens that micrograph with its label
image and shows its measurements; **Open report** opens ``report.html``.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox

from napari_plugin._common import JobRunner, notify_error, notify_info, notify_warning, pad_to_full
from napari_plugin._layers import ms_meta
from napari_plugin._table import DataFrameView
from napari_plugin._train import model_choices, model_events

__all__ = ["BatchWidget", "BatchParams", "batch_job"]


@dataclass(frozen=True)
class BatchParams:
    in_dir: str
    out_dir: str
    model: str
    workers: int
    tta: bool = False  # test-time augmentation (4 flips) for every image


def batch_job(params: BatchParams, cancel):
    """Worker generator: run the batch in a helper thread, yield its progress, return its summary."""
    from micro_seg.batch import run_batch

    events: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}

    def progress(done, total, relpath, status):
        events.put({"done": done, "total": total, "message": f"{done}/{total} {relpath or ''} {status}".strip()})

    def target() -> None:
        try:
            box["summary"] = run_batch(params.in_dir, params.out_dir, model=params.model,
                                       workers=params.workers, progress=progress, cancel=cancel,
                                       segment_options={"tta": True} if params.tta else None)
        except BaseException as exc:  # re-raised in the worker below
            box["error"] = exc

    thread = threading.Thread(target=target, name="micro-seg-batch", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not events.empty():
            try:
                yield events.get(timeout=0.1)
            except queue.Empty:
                yield None  # a report every 0.1 s even while an image takes long
    finally:  # also when the generator is closed: stop starting images, wait for the batch
        if thread.is_alive():
            cancel.set()
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["summary"]


def _changed_since_batch(image_path: Path, rec: Any, mg: Any, labels_shape: tuple) -> str:
    """How the micrograph differs from the one the batch segmented ("" when it is the same).

    The sha256 the batch recorded decides when there is one; without it, the labels must have the size of the
    image or of its analysed part (above a data bar, which the batch does not segment).
    """
    from micro_seg.registry import sha256_file

    recorded = rec.get("sha256")
    if isinstance(recorded, str) and recorded:
        return "" if sha256_file(image_path) == recorded else "the file's content (sha256) has changed"
    rows, cols = mg.data.shape[:2]
    if tuple(labels_shape) in {(rows, cols), (rows - int(mg.databar_rows or 0), cols)}:
        return ""
    return (f"the image is {rows} x {cols} px but its labels are {labels_shape[0]} x {labels_shape[1]}: "
            "it has changed")


class BatchWidget(Container):
    """Dock widget for batch runs and browsing their results."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        import os

        self._in = FileEdit(label="Input folder", mode="d", value=str(Path.home()))
        self._out = FileEdit(label="Output folder", mode="d", value=str(Path.home() / "micro-seg-results"))
        self._model = ComboBox(label="Model", choices=self._model_choices)
        self._workers = SpinBox(label="Worker processes", value=max(1, min(2, os.cpu_count() or 1)), min=0, max=64,
                                tooltip="Parallel processes; 0 runs in this process (debugging).")
        self._tta = CheckBox(label="Test-time augmentation", value=False,
                             tooltip="Average each prediction over 4 flips (4x slower). Changing it redoes the "
                             "images already in the output folder.")
        self._run_btn = PushButton(text="Run batch")
        self._cancel_btn = PushButton(text="Cancel")
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=100)
        self._status = Label(label="Status", value="Pick folders and a model, then Run batch")
        self._load_btn = PushButton(text="Load results of output folder")
        self._report_btn = PushButton(text="Open report")
        self._runner = JobRunner(progress_bar=self._progress, cancel_button=self._cancel_btn,
                                 status_label=self._status, run_button=self._run_btn)
        self.extend([self._in, self._out, self._model, self._workers, self._tta, self._run_btn, self._cancel_btn,
                     self._progress, self._status, self._load_btn, self._report_btn])
        self.table_view = DataFrameView(min_height=200)
        self.native.layout().addWidget(self.table_view)
        self.table_view.clicked.connect(lambda index: self.open_row(index.row()))
        self._run_btn.changed.connect(self.run)
        self._load_btn.changed.connect(lambda *_: self.load_results())
        self._report_btn.changed.connect(self.open_report)
        model_events.saved.connect(self._on_model_saved)
        self.images = None
        self.summary = None

    @staticmethod
    def _model_choices(_widget=None) -> list[tuple[str, Any]]:
        try:
            return model_choices()
        except Exception:
            return []

    def _on_model_saved(self, _folder: str) -> None:
        try:
            self._model.reset_choices()
        except RuntimeError:
            pass

    def run(self, *_: Any):
        in_dir = Path(str(self._in.value)).expanduser()
        out_dir = Path(str(self._out.value)).expanduser()
        if not in_dir.is_dir():
            notify_warning(f"{in_dir}: input folder not found; pick the folder holding your micrographs.")
            return None
        if out_dir.resolve() == in_dir.resolve():
            notify_warning("Choose an output folder different from the input folder.")
            return None
        if not self._model.value:
            notify_warning("No model found: train one in the Train widget or install the shipped models.")
            return None
        params = BatchParams(str(in_dir), str(out_dir), str(self._model.value), int(self._workers.value),
                             tta=bool(self._tta.value))
        return self._runner.start(batch_job, params, on_done=self._done, description="Batch")

    def _done(self, summary) -> None:
        self.summary = summary
        self.load_results(summary.out_dir)
        from micro_seg.batch import unsupported_extensions

        msg = f"{summary.n_ok} ok, {summary.n_failed} failed of {summary.n_images} images in {summary.seconds:.0f} s"
        self._status.value = msg
        said = f"Batch finished: {msg}." + (" The failed rows show why." if summary.n_failed else "")
        # what `micro-seg batch` prints on stderr: folders not followed, failures not retried, ...
        extra = list(summary.warnings)
        if summary.unsupported:
            extra.append(f"skipped {len(summary.unsupported)} file(s) that are not supported images "
                         f"({', '.join(unsupported_extensions(summary.unsupported))})")
        if extra:
            said += " " + "; ".join(extra) + "."
        if summary.n_failed or summary.warnings:
            notify_warning(said)
        else:
            notify_info(said)

    def load_results(self, out_dir: str | Path | None = None):
        """Show ``images.csv`` of an output folder in the table."""
        import pandas as pd

        out = Path(str(out_dir or self._out.value)).expanduser()
        csv = out / "images.csv"
        if not csv.is_file():
            notify_warning(f"{out} has no images.csv: run a batch into it first.")
            return None
        try:
            frame = pd.read_csv(csv, dtype={"path": str, "specimen": str})  # specimen '01' is not '1'
        except (OSError, ValueError) as exc:
            notify_error(f"{csv}: cannot read ({exc}).")
            return None
        missing = [c for c in ("path", "status") if c not in frame.columns]
        if missing:
            notify_error(f"{csv}: no {' or '.join(missing)} column: not the images.csv a micro-seg batch writes.")
            return None
        self.images = frame
        self._results_dir = out
        front = [c for c in ("path", "status", "specimen", "n_grains", "G_planimetric", "G_intercept",
                             "qc_verdict", "error") if c in frame.columns]
        self.table_view.set_frame(frame[front + [c for c in frame.columns if c not in front]])
        return frame

    def _resolve(self, value: str, base: Path) -> Path:
        p = Path(str(value))
        return p if p.is_absolute() else base / p

    def open_row(self, row: int):
        """Open the micrograph of table row ``row`` with its labels; returns the layers added."""
        from micro_seg.errors import InvalidImageError, MicroSegError
        from micro_seg.databar import recorded_databar_rows
        from micro_seg.io import labels_classes, read_labels, read_micrograph
        from napari_plugin._reader import micrograph_layer_data

        if self.images is None or not (0 <= row < len(self.images)):
            return None
        rec = self.images.iloc[row]
        in_dir = Path(str(self._in.value)).expanduser()
        image_path = self._resolve(rec["path"], in_dir)
        if not image_path.exists():  # a name that is not UTF-8 is written with \xb5 escapes in images.csv
            from micro_seg.store import file_name_of

            image_path = self._resolve(file_name_of(str(rec["path"])), in_dir)
        if str(rec.get("status")) != "ok":
            notify_warning(f"{rec['path']} failed in the batch: {rec.get('error')}")
            return None
        opened = self._opened_layers(image_path, rec)
        if opened:  # opened before, and the file is still the batch's: shown again, not added twice
            self._viewer.layers.selection.active = opened[0]
            self._status.value = f"{rec['path']} is open already"
            return opened
        bar = recorded_databar_rows(rec.get("databar_rows"))
        try:
            try:  # the bar the batch left out (its --databar-rows or its detection), not a new guess
                mg = read_micrograph(image_path, databar_rows=bar)
            except InvalidImageError:
                if bar is None:
                    raise
                mg = read_micrograph(image_path)  # no longer fits: the file has changed (said below), opened as it is
        except (MicroSegError, OSError) as exc:
            notify_error(f"{image_path}: cannot open ({exc}); is the input folder the one the batch ran on?")
            return None
        data, kwargs, _ = micrograph_layer_data(mg)
        added = [self._viewer.add_image(data, **kwargs)]
        labels_rel = rec.get("labels")
        if isinstance(labels_rel, str) and labels_rel:
            try:
                labels, px = read_labels(self._resolve(labels_rel, self._results_dir))
                classes = labels_classes(self._resolve(labels_rel, self._results_dir))
            except (MicroSegError, OSError) as exc:
                notify_warning(f"{labels_rel}: cannot read the labels ({exc}).")
                labels = None
            changed = labels is not None and _changed_since_batch(image_path, rec, mg, labels.shape)
            if changed:
                notify_warning(f"{image_path}: {changed} since the batch ran, so its labels ({labels_rel}) are not "
                               "shown; run the batch again to segment the image as it is now.")
            elif labels is not None:
                if mg.databar_rows and labels.shape[0] == mg.shape[0] - mg.databar_rows:
                    # the batch's labels cover the part above the data bar: padded to the image's height, as the
                    # Segment widget's are, so that Measure (which drops databar_rows) removes the bar only once
                    labels = pad_to_full(labels, mg.shape[0])
                meas = {k: (None if v != v else v) for k, v in rec.items()}  # NaN -> None
                model_kind = "grains" if "n_grains" in rec and rec.get("n_grains") == rec.get("n_grains") else "classes"
                meta = {"micro_seg": {"kind": model_kind, "image": kwargs["name"], "pixel_size_um": px or mg.pixel_size_um,
                                      "databar_rows": mg.databar_rows, "batch_measurements": meas}}
                if model_kind == "classes" and classes:
                    # the class names the batch wrote into the label file: Measure names the phases (all of them, as
                    # the batch's phase_fraction_<name> columns) and Annotate can start from this prediction
                    meta["micro_seg"]["classes"] = classes
                extra = {"units": kwargs["units"]} if "units" in kwargs else {}
                added.append(self._viewer.add_labels(labels, name=f"{kwargs['name']} labels", opacity=0.5,
                                                     scale=kwargs.get("scale", (1, 1)), metadata=meta, **extra))
        self._status.value = f"Opened {rec['path']}"
        return added

    def _opened_layers(self, image_path: Path, rec: Any) -> list:
        """The layers an earlier :meth:`open_row` added for ``image_path`` (image first), or [] -- also when the
        batch recorded no sha256 or the file has changed since (then it is opened again, as it is now)."""
        from micro_seg.registry import sha256_file

        recorded = rec.get("sha256")
        def same(meta_path) -> bool:
            try:
                return meta_path is not None and Path(str(meta_path)).resolve() == Path(image_path).resolve()
            except OSError:
                return False

        images = [l for l in self._viewer.layers if same(ms_meta(l).get("path"))]
        if not images or not (isinstance(recorded, str) and recorded) or sha256_file(image_path) != recorded:
            return []
        names = {l.name for l in images}
        labels = [l for l in self._viewer.layers
                  if "batch_measurements" in ms_meta(l) and ms_meta(l).get("image") in names]
        return [images[0], *labels[:1]]

    def open_report(self, *_: Any):
        import webbrowser

        out = getattr(self, "_results_dir", None) or Path(str(self._out.value)).expanduser()
        report = Path(out) / "report.html"
        if not report.is_file():
            notify_warning(f"{out} has no report.html: run a batch into this output folder first.")
            return None
        webbrowser.open(report.as_uri())
        return report
