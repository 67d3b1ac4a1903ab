"""Sample data for napari's File > Open Sample > micro-seg menu.

Each entry opens a micrograph shipped in ``sample_images/`` (calibrated by the
reader) together with its ground truth from ``sample_images/truth/`` as a
hidden Labels layer, so the Measure widget can be tried on known answers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLES", "load_sample"]

# key -> (file name, truth file or None, truth kind)
SAMPLES: dict[str, tuple[str, str | None, str]] = {
    "etched_twins": ("synthetic_etched_twins.tif", "synthetic_etched_twins_labels.tif", "grains"),
    "sem_grains": ("synthetic_sem_grains.tif", "synthetic_sem_grains_labels.tif", "grains"),
    "two_phase": ("synthetic_two_phase.tif", "synthetic_two_phase_labels.tif", "classes"),
    "porous_section": ("synthetic_porous_section.tif", "synthetic_porous_section_labels.tif", "classes"),
    "nist_steel": ("nist_steel_ferrite_crop.tif", "nist_steel_ferrite_crop_boundaries.tif", "boundaries"),
    "nasa_superalloy": ("nasa_super1_spot1_0d_0.tif", "nasa_super1_spot1_0d_0_labels.tif", "classes"),
    "tbm_colour_10": ("tbm_colour_etched_10-256-512.png", None, ""),
    "tbm_colour_14": ("tbm_colour_etched_14-512-512.png", None, ""),
}


def _truth_classes(path: Path) -> list[str] | None:
    import json

    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            desc = tif.pages[0].description
        info = json.loads(desc).get("micro_seg", {}) if desc.startswith("{") else {}
        return list(info.get("classes") or []) or None
    except Exception:  # no class names stored
        return None


def load_sample(key: str) -> list:
    """Layer data for sample ``key`` (image, then its hidden ground truth)."""
    from micro_seg.io import read_labels, read_micrograph
    from micro_seg.resources import sample_images_dir
    from napari_plugin._reader import micrograph_layer_data

    name, truth, kind = SAMPLES[key]
    folder = sample_images_dir()
    micrograph = read_micrograph(folder / name)
    image = micrograph_layer_data(micrograph)
    layers = [image]
    if truth and (folder / "truth" / truth).is_file():
        labels, px = read_labels(folder / "truth" / truth)
        px = px or micrograph.pixel_size_um
        # a hand-traced boundary mask stays one: measured as classes it gave phase fractions, as grains 1 grain
        meta = {"kind": kind if kind in ("grains", "boundaries") else "classes", "truth": True,
                "image": image[1]["name"], "pixel_size_um": px}
        if kind == "classes":
            meta["classes"] = _truth_classes(folder / "truth" / truth)
        kwargs = {"name": f"{image[1]['name']} truth", "visible": False, "opacity": 0.5,
                  "metadata": {"micro_seg": meta}}
        if px:
            kwargs.update(scale=(px, px), units=("um", "um"))
        layers.append((labels, kwargs, "labels"))
    return layers


def etched_twins() -> list:
    return load_sample("etched_twins")


def sem_grains() -> list:
    return load_sample("sem_grains")


def two_phase() -> list:
    return load_sample("two_phase")


def porous_section() -> list:
    return load_sample("porous_section")


def nist_steel() -> list:
    return load_sample("nist_steel")


def nasa_superalloy() -> list:
    return load_sample("nasa_superalloy")


def tbm_colour_10() -> list:
    return load_sample("tbm_colour_10")


def tbm_colour_14() -> list:
    return load_sample("tbm_colour_14")
