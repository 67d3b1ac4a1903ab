"""Sample data for napari's File > Open Sample menu.

* every micrograph shipped in ``sample_images/`` (calibrated, via the reader);
* synthetic micrographs made on the fly by :mod:`micro_seg.synth` whose truth is
  known exactly (grain count, phase fraction), handy for trying the Measure widget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_plugin._reader import micrograph_layer_data

__all__ = ["shipped_samples", "load_shipped_sample", "synthetic_grains", "synthetic_two_phase"]


def shipped_samples() -> list[Path]:
    """Sample micrographs shipped with micro-seg (sorted)."""
    from micro_seg.io import SUPPORTED_EXTENSIONS
    from micro_seg.resources import sample_images_dir

    folder = sample_images_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS
                  and "labels" not in p.stem and "truth" not in p.stem)


def load_shipped_sample(name: str) -> list:
    """Layer data of the shipped sample whose file stem is ``name``."""
    from micro_seg.errors import InputFileNotFoundError
    from micro_seg.io import read_micrograph

    for path in shipped_samples():
        if path.stem == name:
            return [micrograph_layer_data(read_micrograph(path))]
    raise InputFileNotFoundError(f"sample image {name!r} is not in {[p.stem for p in shipped_samples()]}")


def _layer(image: np.ndarray, name: str, pixel_size_um: float, truth: dict) -> tuple:
    meta = {"micro_seg": {"pixel_size_um": pixel_size_um, "calibration_source": "synthetic",
                          "databar_rows": 0, "truth": truth}}
    return (image, {"name": name, "scale": (pixel_size_um, pixel_size_um), "units": ("um", "um"),
                    "metadata": meta, "rgb": image.ndim == 3}, "image")


def synthetic_grains() -> list:
    """Etched optical grain structure, 1024 x 1024 at 0.5 µm/px, with its true grain labels."""
    from micro_seg.synth import grain_micrograph

    s = grain_micrograph((1024, 1024), n_grains=300, difficulty="medium", pixel_size_um=0.5, seed=7)
    truth = {"n_grains": int(s.n_grains)}
    labels_meta = {"micro_seg": {"kind": "grains", "pixel_size_um": 0.5, "truth": truth,
                                 "image": "synthetic etched grains"}}
    return [
        _layer(s.image, "synthetic etched grains", 0.5, truth),
        (s.labels, {"name": "synthetic grains (truth)", "scale": (0.5, 0.5), "units": ("um", "um"),
                    "metadata": labels_meta, "visible": False, "opacity": 0.5}, "labels"),
    ]


def synthetic_two_phase() -> list:
    """Two-phase structure (Boolean disks) 1024 x 1024 at 0.2 µm/px with its known area fraction."""
    from micro_seg.synth import boolean_disks

    rng = np.random.default_rng(3)
    result = boolean_disks((1024, 1024), intensity=4e-4, radius=14.0, seed=3)
    mask = result[0] if isinstance(result, tuple) else result
    mask = np.asarray(mask, dtype=bool)
    image = np.where(mask, 190, 70).astype(np.float32) + rng.normal(0, 12, mask.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    truth = {"area_fraction": float(mask.mean())}
    return [_layer(image, "synthetic two-phase", 0.2, truth)]
