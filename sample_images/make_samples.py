"""Regenerate the sample micrographs in this folder.

Synthetic samples (always, deterministic: same files, same truth, every run)::

    python sample_images/make_samples.py

Real samples (only with the shared datasets beside the checkout; they are
already committed, this documents and reproduces how they were cut)::

    python sample_images/make_samples.py --real ../shared/datasets

Micrographs are written at the top level, their ground truth in ``truth/``.
Calibrated images are ImageJ TIFFs: ``unit=um`` in the ImageJ description and
X/YResolution in pixels per micrometre (the ImageJ / Fiji convention), read back
by ``micro_seg.io.read_micrograph`` as ``calibration_source="imagej"``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
TRUTH = HERE / "truth"


def write_micrograph(path: Path, image: np.ndarray, pixel_size_um: float | None) -> None:
    """ImageJ TIFF; calibrated with ``unit=um`` and pixels per micrometre when known."""
    kwargs: dict = {"imagej": True}
    if pixel_size_um is not None:
        kwargs.update(resolution=(1.0 / pixel_size_um, 1.0 / pixel_size_um),
                      metadata={"unit": "um"})
    tifffile.imwrite(path, image, **kwargs)


def write_truth_json(path: Path, info: dict) -> None:
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def make_synthetic() -> list[Path]:
    # import here so `--help` works without the package installed
    sys.path.insert(0, str(HERE.parent))
    from micro_seg.io import write_labels
    from micro_seg.synth import defect_micrograph, grain_micrograph, phase_micrograph

    TRUTH.mkdir(exist_ok=True)
    written: list[Path] = []

    # 1. etched optical grains with annealing twins (austenitic-steel-like)
    s = grain_micrograph((512, 512), n_grains=110, kind="poisson", style="optical",
                         difficulty="medium", twin_probability=0.45, pixel_size_um=0.5,
                         seed=2026)
    name = "synthetic_etched_twins"
    write_micrograph(HERE / f"{name}.tif", s.image, s.pixel_size_um)
    write_labels(TRUTH / f"{name}_labels.tif", s.labels, pixel_size_um=s.pixel_size_um)
    write_labels(TRUTH / f"{name}_boundaries.tif", s.boundaries, pixel_size_um=s.pixel_size_um)
    write_labels(TRUTH / f"{name}_twins.tif", s.twin_mask, pixel_size_um=s.pixel_size_um)
    write_truth_json(TRUTH / f"{name}_labels.json", {
        "kind": "grains", "n_grains": s.n_grains, "pixel_size_um": s.pixel_size_um,
        "grains_per_mm2": s.meta["grains_per_mm2"], "mean_area_um2": s.meta["mean_area_um2"],
        "n_twins": s.meta["n_twins"], "generator": "micro_seg.synth.grain_micrograph",
        "meta": s.meta,
    })
    written.append(HERE / f"{name}.tif")

    # 2. SEM channelling-contrast grains, 16-bit
    s = grain_micrograph((512, 512), n_grains=90, kind="hardcore", style="sem",
                         difficulty="medium", bit_depth=16, pixel_size_um=0.05, seed=7)
    name = "synthetic_sem_grains"
    write_micrograph(HERE / f"{name}.tif", s.image, s.pixel_size_um)
    write_labels(TRUTH / f"{name}_labels.tif", s.labels, pixel_size_um=s.pixel_size_um)
    write_labels(TRUTH / f"{name}_boundaries.tif", s.boundaries, pixel_size_um=s.pixel_size_um)
    write_truth_json(TRUTH / f"{name}_labels.json", {
        "kind": "grains", "n_grains": s.n_grains, "pixel_size_um": s.pixel_size_um,
        "grains_per_mm2": s.meta["grains_per_mm2"], "mean_area_um2": s.meta["mean_area_um2"],
        "n_twins": s.meta["n_twins"], "generator": "micro_seg.synth.grain_micrograph",
        "meta": s.meta,
    })
    written.append(HERE / f"{name}.tif")

    # 3. two-phase (ferrite-pearlite-like) optical section
    p = phase_micrograph((512, 512), fractions=(0.65, 0.35), structure="blobs",
                         correlation_px=9, style="optical", difficulty="easy",
                         class_names=("ferrite", "pearlite"), pixel_size_um=0.25, seed=11)
    name = "synthetic_two_phase"
    write_micrograph(HERE / f"{name}.tif", p.image, p.pixel_size_um)
    write_labels(TRUTH / f"{name}_labels.tif", p.classes, pixel_size_um=p.pixel_size_um,
                 classes=list(p.class_names))
    write_truth_json(TRUTH / f"{name}_labels.json", {
        "kind": "phases", "classes": list(p.class_names), "pixel_size_um": p.pixel_size_um,
        "phase_fractions": dict(zip(p.class_names, p.fractions.tolist())),
        "generator": "micro_seg.synth.phase_micrograph", "meta": p.meta,
    })
    written.append(HERE / f"{name}.tif")

    # 4. porous polished section: pores, cracks, inclusions
    d = defect_micrograph((512, 512), n_pores=30, n_cracks=2, n_inclusions=20,
                          difficulty="medium", pixel_size_um=1.0, seed=5)
    name = "synthetic_porous_section"
    write_micrograph(HERE / f"{name}.tif", d.image, d.pixel_size_um)
    write_labels(TRUTH / f"{name}_labels.tif", d.classes, pixel_size_um=d.pixel_size_um,
                 classes=list(d.class_names))
    write_labels(TRUTH / f"{name}_instances.tif", d.instances, pixel_size_um=d.pixel_size_um)
    write_truth_json(TRUTH / f"{name}_labels.json", {
        "kind": "defects", "classes": list(d.class_names), "counts": d.counts,
        "pixel_size_um": d.pixel_size_um,
        "area_fraction": {n: float((d.classes == i).mean())
                          for i, n in enumerate(d.class_names) if i},
        "generator": "micro_seg.synth.defect_micrograph", "meta": d.meta,
    })
    written.append(HERE / f"{name}.tif")
    return written


def make_real(datasets: Path) -> list[Path]:
    """Cut the real samples from ../shared/datasets (licences: see README.md)."""

    TRUTH.mkdir(exist_ok=True)
    written: list[Path] = []
    # NIST ferritic steel, public domain, 0.2252 um/px (222 px = 50 um)
    ref = datasets / "nist_gsat/ex_segmentation/optical_etched/ref_steel_micrograph"
    raw = tifffile.imread(ref / "extras/grain_structures_steel.tif")
    traced = tifffile.imread(ref / "grain_structures_steel_highlighted.tif")
    if traced.ndim == 3:
        traced = traced[..., 0]
    crop = (slice(0, 400), slice(0, 512))
    name = "nist_steel_ferrite_crop"
    write_micrograph(HERE / f"{name}.tif", raw[crop], 0.2252)
    sys.path.insert(0, str(HERE.parent))
    from micro_seg.io import write_labels

    write_labels(TRUTH / f"{name}_boundaries.tif", (traced[crop] == 0).astype(np.uint8),
                 pixel_size_um=0.2252)
    written.append(HERE / f"{name}.tif")

    # TBM colour-etched crops (MIT), byte-for-byte copies; no pixel size known
    tbm = datasets / "tbm_mlographypp/AutoSAM/TBM_dataset/TrainDataset"
    for stem in ("10-256-512", "14-512-512"):
        out = HERE / f"tbm_colour_etched_{stem}.png"
        shutil.copyfile(tbm / "images" / f"{stem}.png", out)
        shutil.copyfile(tbm / "masks" / f"{stem}.png",
                        TRUTH / f"tbm_colour_etched_{stem}_boundaries.png")
        written.append(out)

    # NASA Super1 Ni superalloy SEM (MIT); RGB with equal channels -> grey; no pixel size known
    sup = datasets / "nasa_superalloy/benchmark_segmentation_data/Super1"
    stem = "spot1_0d_0"
    img = tifffile.imread(sup / "val" / f"{stem}.tif")
    grey = img[..., 0] if img.ndim == 3 else img
    name = f"nasa_super1_{stem}"
    write_micrograph(HERE / f"{name}.tif", np.ascontiguousarray(grey), None)
    mask = tifffile.imread(sup / "val_annot" / f"{stem}_mask.tif")
    rgb = mask[..., :3].astype(np.int64)
    top = 65535 if mask.dtype == np.uint16 else 255
    classes = np.zeros(rgb.shape[:2], np.uint8)  # 0 matrix (gamma)
    classes[(rgb[..., 0] == 0) & (rgb[..., 1] == 0) & (rgb[..., 2] == top)] = 1  # secondary
    classes[(rgb[..., 0] == top) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)] = 2  # tertiary
    write_labels(TRUTH / f"{name}_labels.tif", classes,
                 classes=["matrix", "secondary_gamma_prime", "tertiary_gamma_prime"])
    written.append(HERE / f"{name}.tif")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=None, metavar="DATASETS",
                        help="also re-cut the real samples from this datasets folder")
    args = parser.parse_args(argv)
    files = make_synthetic()
    if args.real is not None:
        files += make_real(args.real)
    for f in files:
        print(f.relative_to(HERE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
