"""Loaders that turn the public labelled micrograph sets into training pairs.

Every loader returns ``(image, labels, name)`` triples in the *training label
convention* of :mod:`micro_seg.training`:

* ``0`` = unlabelled (ignored by the loss: scribbles and partial labels work),
* ``c`` = class ``c`` of the model (``1..n_classes``), i.e. network output
  channel ``c - 1`` and, after prediction, class-label value ``c - 1``.

The label decoding of each set follows ``../shared/datasets/DATASETS.md``.
None of these files ship with micro-seg; the loaders are used by the training
scripts in ``models/*/train.py`` and by ``benchmarks/``.

Examples
--------
>>> from micro_seg.datasets import decode_nasa_mask
>>> import numpy as np
>>> rgba = np.zeros((1, 3, 4), np.uint8)
>>> rgba[0, 0, 2] = 255          # pure blue  -> secondary gamma-prime
>>> rgba[0, 1, 0] = 255          # pure red   -> tertiary gamma-prime
>>> rgba[0, 2] = 90              # grey       -> matrix
>>> decode_nasa_mask(rgba).tolist()
[[2, 3, 1]]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from micro_seg.errors import InputFileNotFoundError, TrainingDataError

__all__ = [
    "NASA_CLASSES",
    "TBM_CLASSES",
    "METALDAM_CLASSES",
    "decode_nasa_mask",
    "load_nasa_superalloy",
    "load_tbm_crops",
    "load_tbm_full_partial",
    "load_nist_steel",
    "load_metaldam",
    "load_magnetic_tile",
    "shared_datasets_dir",
]

NASA_CLASSES = ("matrix", "secondary_gamma_prime", "tertiary_gamma_prime")
TBM_CLASSES = ("grain", "boundary")
METALDAM_CLASSES = ("matrix", "austenite", "martensite_austenite", "precipitate", "defect")


def shared_datasets_dir() -> Path:
    """``../shared/datasets`` beside the checkout (absent in a user's clone)."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared" / "datasets", Path("/work/shared/datasets")):
        if cand.is_dir():
            return cand
    raise InputFileNotFoundError(f"{here.parent / 'shared' / 'datasets'}: shared datasets folder not found")


def _read(path: Path) -> np.ndarray:
    import tifffile
    from PIL import Image

    if path.suffix.lower() in (".tif", ".tiff"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(tifffile.imread(path))
    from micro_seg.io import pillow_pixels

    with Image.open(path) as im:
        return pillow_pixels(im, path)


def decode_nasa_mask(rgba: np.ndarray) -> np.ndarray:
    """Decode a NASA Super1 RGBA overlay into training labels 1/2/3.

    Pure blue (0, 0, max) = secondary gamma-prime (2), pure red (max, 0, 0) =
    tertiary gamma-prime (3), every other pixel = matrix (1).  ``max`` is 255
    for uint8 overlays and 65535 for uint16 ones.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] < 3:
        raise TrainingDataError(f"NASA mask must be rows x cols x 3/4, got shape {rgba.shape}")
    top = 65535 if rgba.dtype == np.uint16 else 255
    r, g, b = rgba[..., 0], rgba[..., 1], rgba[..., 2]
    out = np.ones(rgba.shape[:2], np.uint8)
    out[(r == 0) & (g == 0) & (b == top)] = 2
    out[(r == top) & (g == 0) & (b == 0)] = 3
    return out


def load_nasa_superalloy(split: str = "train", *, root: Path | None = None) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Super1 image/label pairs of one split (``train`` or ``val``).

    Images are returned as 2-D uint8 (the three RGB channels are identical);
    labels 1 = matrix, 2 = secondary, 3 = tertiary gamma-prime.
    """
    root = Path(root) if root else shared_datasets_dir() / "nasa_superalloy"
    folder = root / "benchmark_segmentation_data" / "Super1" / split
    if not folder.is_dir():
        raise InputFileNotFoundError(f"{folder}: NASA Super1 split not found")
    out = []
    for img_path in sorted(folder.glob("*.tif")):
        mask_path = folder.parent / f"{split}_annot" / f"{img_path.stem}_mask.tif"
        img = _read(img_path)
        if img.ndim == 3:
            img = img[..., 0]
        out.append((img, decode_nasa_mask(_read(mask_path)), img_path.stem))
    return out


_TBM_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def load_tbm_crops(*, images: set[int] | None = None, root: Path | None = None) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """TBM 256x256 crops (train + test folders) with labels 1 = grain, 2 = boundary.

    ``images`` keeps only crops of those source micrograph numbers (split by
    micrograph, never by crop).  Boundary = mask value > 127.
    """
    root = Path(root) if root else shared_datasets_dir() / "tbm_mlographypp"
    out = []
    for sub in ("TrainDataset", "TestDataset"):
        folder = root / "AutoSAM" / "TBM_dataset" / sub
        for img_path in sorted((folder / "images").glob("*.png")):
            m = _TBM_NAME.match(img_path.stem)
            if not m or (images is not None and int(m.group(1)) not in images):
                continue
            img = _read(img_path)[..., :3]
            mask = _read(folder / "masks" / img_path.name)
            if mask.ndim == 3:
                mask = mask[..., 0]
            out.append((img, np.where(mask > 127, 2, 1).astype(np.uint8), img_path.stem))
    return out


def load_tbm_full_partial(*, images: set[int] | None = None, root: Path | None = None) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Full TBM micrographs with their partial label maps (0 outside labelled zones).

    Inside a labelled 256x256 zone white = grain (1) and dark = boundary (2,
    thin ~1 px lines); everything outside the zones is unlabelled (0).
    """
    root = Path(root) if root else shared_datasets_dir() / "tbm_mlographypp"
    img_dir = root / "Datasets" / "without_impurities with corresponding GT crops"
    gt_dir = root / "Datasets" / "GT" / "annotations_overlayed_on_full_images"
    zones: dict[int, list[tuple[int, int]]] = {}
    for p in (root / "AutoSAM" / "TBM_dataset").glob("*/images/*.png"):
        m = _TBM_NAME.match(p.stem)
        if m:
            zones.setdefault(int(m.group(1)), []).append((int(m.group(2)), int(m.group(3))))
    out = []
    for img_path in sorted(img_dir.glob("*.png"), key=lambda p: int(p.stem)):
        n = int(img_path.stem)
        if images is not None and n not in images:
            continue
        img = _read(img_path)[..., :3]
        gt = _read(gt_dir / img_path.name)
        if gt.ndim == 3:
            gt = gt[..., 0]
        lab = np.zeros(gt.shape, np.uint8)
        for y, x in zones.get(n, []):
            zone = gt[y : y + 256, x : x + 256]
            lab[y : y + 256, x : x + 256] = np.where(zone >= 128, 1, 2)
        rows, cols = min(img.shape[0], lab.shape[0]), min(img.shape[1], lab.shape[1])
        out.append((img[:rows, :cols], lab[:rows, :cols], img_path.stem))
    return out


def load_nist_steel(*, root: Path | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """NIST GSAT etched steel micrograph, hand-traced boundaries, pixel size (um).

    Returns ``(image, boundary_mask, 0.2252)``; the boundary mask is the
    hand trace (``highlighted == 0``).
    """
    root = Path(root) if root else shared_datasets_dir() / "nist_gsat"
    base = root / "ex_segmentation" / "optical_etched" / "ref_steel_micrograph"
    img = _read(base / "extras" / "grain_structures_steel.tif")
    hl = _read(base / "grain_structures_steel_highlighted.tif")
    if img.ndim == 3:
        img = img[..., 0]
    if hl.ndim == 3:
        hl = hl[..., 0]
    return img, hl == 0, 0.2252


def load_metaldam(*, images: set[int] | None = None, root: Path | None = None) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """MetalDAM pairs (research-only licence!): labels = index map + 1 (1..5).

    The image is cropped to the label's top-left aligned extent (removes the
    SEM data bar).
    """
    root = Path(root) if root else shared_datasets_dir() / "metaldam"
    base = root / "datasets" / "MetalDAM"
    out = []
    for lab_path in sorted((base / "labels").glob("micrograph*.png"), key=lambda p: int(p.stem[10:])):
        n = int(lab_path.stem[10:])
        if images is not None and n not in images:
            continue
        lab = _read(lab_path)
        if lab.ndim == 3:
            lab = lab[..., 0]
        img = _read(base / "images" / f"{lab_path.stem}.jpg")
        if img.ndim == 3:
            img = img[..., 0]
        img = img[: lab.shape[0], : lab.shape[1]]
        out.append((img, (lab.astype(np.uint8) + 1), lab_path.stem))
    return out


def load_magnetic_tile(*, root: Path | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, str, str]]:
    """Magnetic-tile pairs (research-only licence!): labels 1 = background, 2 = defect.

    Yields ``(image, labels, name, defect_class)``.
    """
    root = Path(root) if root else shared_datasets_dir() / "magnetic_tile"
    for cls_dir in sorted(root.glob("MT_*")):
        for img_path in sorted((cls_dir / "Imgs").glob("*.jpg")):
            mask_path = img_path.with_suffix(".png")
            if not mask_path.exists():
                continue
            img = _read(img_path)
            if img.ndim == 3:
                img = img[..., 0]
            mask = _read(mask_path)
            if mask.ndim == 3:
                mask = mask[..., 0]
            yield img, np.where(mask > 127, 2, 1).astype(np.uint8), img_path.stem, cls_dir.name[3:]
