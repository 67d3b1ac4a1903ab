"""Helpers for the batch tests: synthetic inputs with known answers and a model-free
per-image function (threshold + label) that the batch machinery can run in worker
processes (it must live in an importable module, hence this file).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from micro_seg.batch_worker import (BatchConfig, ImageResult, atomic_path, output_stem, render_overlay,
                                    sha256_file)

PIXEL_SIZE_UM = 0.5


def disk_image(n_disks: int, *, seed: int, shape: tuple[int, int] = (96, 128), radius: int = 5) -> np.ndarray:
    """uint8 image with exactly ``n_disks`` separate bright disks (placed on a jittered grid)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(10, 40, size=shape).astype(np.uint8)
    rows, cols = shape
    cell = 2 * radius + 6
    slots = [(r, c) for r in range(cell // 2, rows - cell // 2, cell) for c in range(cell // 2, cols - cell // 2, cell)]
    assert n_disks <= len(slots)
    chosen = rng.choice(len(slots), size=n_disks, replace=False)
    yy, xx = np.mgrid[:rows, :cols]
    for i in chosen:
        r, c = slots[i]
        r += int(rng.integers(-2, 3))
        c += int(rng.integers(-2, 3))
        img[(yy - r) ** 2 + (xx - c) ** 2 <= radius**2] = 220
    return img


def write_tiff(path: Path, image: np.ndarray, pixel_size_um: float | None = PIXEL_SIZE_UM) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if pixel_size_um:
        res = 1e4 / pixel_size_um  # pixels per cm
        kwargs = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, image, **kwargs)
    return path


def make_folder(root: Path, *, counts: dict[str, int], seed: int = 0) -> dict[str, int]:
    """Write one image per ``relpath -> n_disks``; returns the same mapping (the truth)."""
    for i, (rel, n) in enumerate(sorted(counts.items())):
        write_tiff(root / rel, disk_image(n, seed=seed + i))
    return dict(counts)


def threshold_process(path: str, config: BatchConfig) -> ImageResult:
    """Model-free per-image function: threshold, label, count, write the usual outputs."""
    from skimage.measure import label, regionprops_table

    from micro_seg.io import read_micrograph, write_labels

    relpath = Path(path).relative_to(config.in_dir).as_posix()
    st = os.stat(path)
    mg = read_micrograph(path, pixel_size_um=config.pixel_size_um)
    img = np.asarray(mg.analysis_data, dtype=float)
    labels = label(img > 128)
    props = regionprops_table(labels, properties=("label", "area"))
    px = mg.pixel_size_um
    area_key = "area_um2" if px else "area_px"
    areas = props["area"] * (px * px if px else 1.0)
    out = Path(config.out_dir)
    stem = output_stem(relpath)
    (out / "labels" / stem).parent.mkdir(parents=True, exist_ok=True)
    write_labels(out / f"labels/{stem}_labels.tif", labels, pixel_size_um=px)
    with atomic_path(out / f"overlays/{stem}_overlay.png") as tmp:
        render_overlay(img, labels, kind="classes").save(tmp, format="PNG")
    field_area_mm2 = img.size * (px * px if px else 1.0) * 1e-6
    return ImageResult(
        relpath=relpath, status="ok", sha256=sha256_file(path), size_bytes=st.st_size, mtime_ns=st.st_mtime_ns,
        shape=tuple(mg.data.shape), dtype=str(mg.data.dtype), pixel_size_um=px,
        calibration_source=mg.calibration_source, databar_rows=mg.databar_rows, model_name="threshold",
        measurements={"n_objects": int(labels.max()), "defects_area_fraction": float((labels > 0).mean()),
                      "defects_density_per_mm2": float(labels.max() / field_area_mm2)},
        objects={"defects": {"label": props["label"].tolist(), area_key: areas.tolist()}},
        outputs={"labels": f"labels/{stem}_labels.tif", "overlay": f"overlays/{stem}_overlay.png"},
    )


def slow_threshold_process(path: str, config: BatchConfig) -> ImageResult:
    """As :func:`threshold_process`, plus a delay so a test can kill the batch mid-way."""
    time.sleep(float(os.environ.get("MICRO_SEG_TEST_DELAY", "0.25")))
    return threshold_process(path, config)


def crashing_process(path: str, config: BatchConfig) -> ImageResult:
    """Kills its own worker process for inputs named ``crash*`` (a native crash / OOM kill)."""
    if Path(path).name.startswith("crash"):
        os._exit(137)
    return threshold_process(path, config)
