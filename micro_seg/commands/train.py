"""``micro-seg train IMAGES_DIR LABELS_DIR --out MODEL_DIR``: train or fine-tune a segmenter.

Image/label pairs are matched by file stem: ``IMAGES_DIR/a.tif`` pairs with
``LABELS_DIR/a.png`` (or, when no image is named like the label file,
``a_labels.*``, ``a_label.*``, ``a_mask.*``).  Hidden files (names starting
with ``.``) are left out.  Label files
must be lossless (PNG, TIFF, BMP): JPEG labels are refused (their compression
artefacts would be trained as classes).  Labels cover the whole image or, for
an SEM image with a data bar, the image without it (as ``micro-seg segment``
writes them): then the bar is left out of training.

Label encodings (``--label-encoding``)
--------------------------------------
``sparse`` (default)
    0 = unlabelled (ignored: scribbles and partial labels work), value ``c``
    = class ``c`` (1-based: the first name in ``--classes`` is 1).
``dense``
    every pixel labelled, value ``v`` = class ``v + 1`` (0-based index maps,
    such as the class-label images ``micro-seg segment`` writes).
``mask``
    binary masks: 0 = the first class (background), any non-zero value = the
    second (foreground): 0/255 and 0/1 masks, bool images and instance masks
    such as ``micro-seg measure defects`` writes (ids 1, 2, ... = pores).  A
    grey 8-bit mask (values between 0 and 255, e.g. anti-aliased edges) is
    read the same way, with a warning.

Examples
--------
>>> from micro_seg.cli import main
>>> main(["train", "imgs", "labs", "--out", "m", "--classes", "a,b"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from micro_seg.augment import AUGMENT_PRESETS
from micro_seg.io import check_output_folder
from micro_seg.commands import note_model_replaced
from micro_seg.errors import InputFileNotFoundError, OutputPathError, TrainingDataError

_IMAGE_EXT = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
_LABEL_SUFFIXES = ("", "_labels", "_label", "_mask", "_masks", "_annotation")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a segmentation model from image/label pairs (0 = unlabelled)",
        description="Train (or fine-tune with --base) a segmentation model from image/label pairs matched by "
        "file stem.  Labels: 0 = unlabelled (ignored), c = class c (1-based).  Writes a model folder that "
        "--model PATH accepts everywhere.",
    )
    p.add_argument("images_dir", help="folder of micrographs")
    p.add_argument("labels_dir", help="folder of label images with the same stems (PNG or TIFF; JPEG is refused)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--base", default=None, help="model name or folder to fine-tune from")
    p.add_argument("--epochs", type=int, default=40, help="passes over the training patches (default 40; --minutes may stop earlier)")
    p.add_argument("--arch", default="msnet", help="network architecture (msnet, msnet-s, msnet-l, smp-unet-resnet18, smp:<Arch>:<encoder>)")
    p.add_argument("--classes", default=None, help="comma-separated class names, label value 1 first")
    p.add_argument("--task", default=None, choices=["semantic", "grains"], help="model task (default semantic, or the base model's)")
    p.add_argument("--name", default=None, help="model name on the card (default: the --out folder name)")
    p.add_argument("--material", default=None,
                   help="what the micrographs show, recorded on the card (a fine-tune does not inherit the base "
                        "model's material)")
    p.add_argument("--label-encoding", default="sparse", choices=["sparse", "dense", "mask"],
                   help="how label files code classes: sparse (default; 0 = unlabelled, c = class c, for scribbles), dense (0 = the first class, every pixel labelled, e.g. a class map from micro-seg segment or a data set), mask (0 = background, any non-zero value = foreground: a 0/255 or 0/1 mask, or an instance mask such as measure defects writes)")
    p.add_argument("--patch-size", type=int, default=256, help="side of the square training patches in pixels (default 256)")
    p.add_argument("--patches-per-epoch", type=int, default=None, help="patches per epoch (default: about twice the training pixels)")
    p.add_argument("--batch-size", type=int, default=8, help="patches per training step (default 8)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 3e-3, 1e-3 when fine-tuning)")
    p.add_argument("--class-weights", default="auto",
                   help="loss weight per class: 'auto' (inverse square root of class frequency, capped), 'none', "
                   "or comma-separated numbers, one per class")
    p.add_argument("--dice-weight", type=float, default=0.0, help="weight of a soft Dice term added to the cross-entropy")
    p.add_argument("--rare-class-fraction", type=float, default=0.3,
                   help="fraction of training patches centred on a pixel of a rare class")
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep the plain argmax decision (default: per-class logit offsets chosen on the validation "
                   "images to maximise their mean IoU, folded into the network)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of IMAGES held out for validation")
    p.add_argument("--patience", type=int, default=10,
                   help="stop after this many epochs without a better validation mean IoU (default 10; 0 = never "
                        "stop early)")
    p.add_argument("--keep", default="best", choices=["best", "last"],
                   help="weights to keep: the epoch with the best validation mean IoU (default) or the last epoch "
                   "(better for a fixed time budget with a small or noisy validation split)")
    p.add_argument("--pseudo-labels", type=float, default=None, metavar="P",
                   help="with --base: unlabelled pixels that the base model classifies with probability >= P "
                   "(e.g. 0.9) are trained on its class, so scribbles correct the model without reshaping what "
                   "they do not touch")
    p.add_argument("--input-scale", type=float, default=None,
                   help="train on the micrographs resized by this factor (e.g. 0.5 when the structures are many "
                   "pixels across: 4x faster and more context per patch); recorded on the card, and segmenting "
                   "resizes the same way. Default 1, or the base model's")
    p.add_argument("--augment", default="full", choices=AUGMENT_PRESETS,
                   help="augmentations: full (flips, 90-degree rotations, scale, contrast, brightness, gamma, noise, "
                   "blur), geometric (flips, rotations and scale only: for subtle, low-contrast targets) or none")
    p.add_argument("--keep-orientation", action="store_true",
                   help="no 90-degree rotations (flips that keep directions only): for images with a fixed direction "
                   "such as grinding marks, rolling direction or scan lines")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock time limit. When the epochs fit in it, it changes nothing; when they do not (judged "
                        "on the first steps), the learning-rate schedule follows the clock and training stops at the "
                        "limit: such a run depends on the machine's speed (the card's 'stopped' says so)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed, data and --threads give the same model (unless the epochs do "
                        "not fit in --minutes) (default 0)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the validation split (default: --seed). Runs that differ only in --seed but share "
                   "--split-seed hold out the same images: `micro-seg models ensemble --calibrate` can then choose the "
                   "ensemble's decision on images none of its members trained on")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default OUT/checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint a stopped run left (Ctrl-C, a full disk): the same data and "
                        "training settings; --epochs, --lr, --minutes, --patience and --keep may differ (--epochs N "
                        "with N epochs done writes the model from the checkpoint at once)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr (warnings are still printed)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (best_epoch counts from 0, as the card's training history does; the "
                        "progress lines count from 1); its warnings list every warning printed")
    p.set_defaults(func=run)


def _read_image(path: Path, info: dict | None = None) -> tuple[np.ndarray, int]:
    """The micrograph's pixels and the rows of its SEM data bar (0 if none); ``info`` (if given) collects its
    pixel size (``"pixel_sizes"``) and what the reader warned about (``"warnings"``: a multi-page file of which
    only page 0 is read, ...)."""
    from micro_seg.io import read_micrograph

    m = read_micrograph(path)
    if info is not None:
        info.setdefault("pixel_sizes", []).append(m.pixel_size_um)
        info.setdefault("warnings", []).extend(f"{path}: {w}" for w in m.reader_warnings)
    return np.asarray(m.data), int(m.databar_rows)


#: TIFF compressions that keep every pixel value: none, CCITT (bilevel), LZW, deflate, PackBits, LZMA, zstd, PNG.
#: The others change values (JPEG, LERC with an error bound) or may (JPEG 2000, JPEG XL, WebP, JPEG XR): refused.
_LOSSLESS_TIFF_COMPRESSION = (1, 2, 3, 4, 5, 8, 32773, 32946, 34925, 34926, 34933, 50000)

#: Formats (as PIL names them) that store pixel values exactly; WebP only when lossless (checked apart).
_LOSSLESS_FORMATS = ("PNG", "TIFF", "BMP", "GIF", "PPM")


def _lossy_label_error(path: Path, encoding: str = "JPEG") -> TrainingDataError:
    lossy = "lossy" if encoding == "JPEG" else "an encoding that can be lossy"
    return TrainingDataError(f"{path}: label file is {encoding}-compressed ({lossy}): its artefacts change label "
                             "values at every edge and make classes that are not there; save labels as PNG or TIFF "
                             "(lossless)")


def _lossless_webp(path: Path) -> bool:
    """Whether a WebP file holds a lossless ('VP8L') image."""
    with open(path, "rb") as fh:
        return fh.read(16)[12:16] == b"VP8L"


def _read_plain(path: Path) -> np.ndarray:
    """A label file's pixels; files whose encoding may change pixel values (JPEG, lossy WebP, JPEG 2000, JPEG-XL
    or LERC in a TIFF, ...) are refused."""
    import tifffile
    from PIL import Image

    from micro_seg.io import pillow_pixels

    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise _lossy_label_error(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) > 1:  # a stack read whole looked like a colour image with the wrong size
                    raise TrainingDataError(f"{path}: label file has {len(tif.pages)} pages; give one 2-D label "
                                            "image per training image (split the stack)")
                compression = tif.pages[0].compression
                if int(compression) not in _LOSSLESS_TIFF_COMPRESSION:
                    raise _lossy_label_error(path, _tiff_compression_name(compression))
                return np.asarray(tif.pages[0].asarray())
        with Image.open(path) as im:
            if im.format in ("JPEG", "MPO"):  # a JPEG under another extension
                raise _lossy_label_error(path)
            if im.format == "TIFF" and int(im.tag_v2.get(259, 1)) not in _LOSSLESS_TIFF_COMPRESSION:
                raise _lossy_label_error(path, _tiff_compression_name(im.tag_v2.get(259)))
            if im.format not in _LOSSLESS_FORMATS and not (im.format == "WEBP" and _lossless_webp(path)):
                raise _lossy_label_error(path, im.format)
            return pillow_pixels(im, path)
    except TrainingDataError:
        raise
    except Exception as exc:  # unreadable file: user error, not a bug
        raise TrainingDataError(f"{path}: cannot read image: {exc}") from exc


def _tiff_compression_name(compression) -> str:
    """'JPEG', 'JPEGXL', 'LERC', ... for a TIFF compression code."""
    import tifffile

    try:
        name = tifffile.COMPRESSION(int(compression)).name
    except ValueError:
        return f"TIFF compression {int(compression)}"
    return {"OJPEG": "JPEG", "JPEG_LOSSY": "JPEG", "ALT_JPEG": "JPEG"}.get(name, name)


def _read_label(path: Path, encoding: str, grey_masks: list | None = None) -> np.ndarray:
    """A label file in the training convention (0 = unlabelled, c = class c) read with ``encoding``; ``grey_masks``
    (if given) collects the paths of 0/255 masks with grey (anti-aliased) edges, read as non-zero = foreground."""
    lab = _read_plain(path)
    if lab.ndim == 3:
        if lab.shape[2] >= 3 and not (np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])):
            raise TrainingDataError(f"{path}: label image is colour; expected one channel of integer class values")
        lab = lab[..., 0]
    if lab.ndim != 2:
        raise TrainingDataError(f"{path}: label image must be 2-D, got shape {lab.shape}")
    if lab.dtype.kind == "f":
        from micro_seg.measure.labels import whole_float_labels

        try:
            lab = whole_float_labels(lab, str(path))
        except ValueError as exc:
            raise TrainingDataError(str(exc)) from None
    if lab.dtype.kind == "b":
        lab = lab.astype(np.int64)
    if encoding == "dense":
        lab = lab.astype(np.int64) + 1
    elif encoding == "mask":
        # any non-zero pixel is foreground: 0/255 and 0/1 masks alike, and instance masks (ids 1..n, as measure
        # defects writes them), whose ids up to 127 a "> 127" rule made background
        if grey_masks is not None and lab.dtype == np.uint8 and lab.size and int(lab.max()) == 255:
            grey = int(np.count_nonzero((lab > 0) & (lab < 255)))
            if 0 < grey < np.count_nonzero(lab == 255):  # a 0/255 mask with grey edges, not ids up to 255
                grey_masks.append(path)
        lab = np.where(lab != 0, 2, 1)
    if lab.size and int(lab.min()) < 0:
        raise TrainingDataError(f"{path}: label values must be >= 0, found {int(lab.min())}")
    return lab.astype(np.int64)


def _parse_class_weights(text: str, n_classes: int) -> str | list[float] | None:
    """``"auto"`` / ``"none"`` / ``"w1,w2,..."`` (one non-negative number per class)."""
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t == "none":
        return None
    try:
        weights = [float(v) for v in t.split(",")]
    except ValueError:
        raise TrainingDataError(f"--class-weights must be 'auto', 'none' or {n_classes} numbers, got {text!r}") from None
    if len(weights) != n_classes or min(weights) < 0 or not all(np.isfinite(weights)):
        raise TrainingDataError(f"--class-weights needs {n_classes} non-negative numbers (one per class), got {text!r}")
    if max(weights) == 0:
        raise TrainingDataError(f"--class-weights are all 0 ({text!r}): the loss would be 0 / 0 (NaN); give at least "
                                "one class a positive weight")
    return weights


def _binary_mask_hint(labels: list[np.ndarray], encoding: str) -> str:
    """Advice for sparse-read label files that are all binary masks (0 and one other value, e.g. 0/255), else ""."""
    if encoding != "sparse":
        return ""
    values = set()
    for lab in labels:
        values.update(int(v) for v in np.unique(lab))
        if len(values - {0}) > 1:
            return ""
    if len(values - {0}) != 1 or 0 not in values:
        return ""
    (v,) = values - {0}
    return (f"the label files hold only 0 and {v}, as binary masks do: --label-encoding mask reads 0 as the first "
            "class (background) and any non-zero value as the second")


def find_pairs(images_dir: str | Path, labels_dir: str | Path) -> list[tuple[Path, Path]]:
    """Match images to labels by stem; raise :class:`TrainingDataError` on any mismatch."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for d, what in ((images_dir, "images"), (labels_dir, "labels")):
        if not d.exists():
            raise InputFileNotFoundError(f"{d}: {what} folder does not exist")
        if not d.is_dir():
            raise TrainingDataError(f"{d}: {what} path is not a folder")
    if images_dir.resolve() == labels_dir.resolve():
        raise TrainingDataError(f"{labels_dir}: the labels folder is the images folder; give the folder of label "
                                "images (0 = unlabelled, c = class c) with the same file stems")
    # hidden files (macOS '._a.tif' AppleDouble copies, '.thumbs') are no images, as in batch and train-classifier
    imgs = sorted(p for p in images_dir.iterdir()
                  if p.is_file() and p.suffix.lower() in _IMAGE_EXT and not p.name.startswith("."))
    labs = sorted(p for p in labels_dir.iterdir()
                  if p.is_file() and p.suffix.lower() in _IMAGE_EXT and not p.name.startswith("."))
    for found, d, what in ((imgs, images_dir, "images"), (labs, labels_dir, "label images")):
        if not found:
            subs = any(p.is_dir() and not p.name.startswith(".") for p in d.iterdir())
            raise TrainingDataError(f"{d}: no {what} found (extensions {', '.join(sorted(_IMAGE_EXT))})"
                                    + ("; sub-folders are not searched: give the folder that holds the files" if subs
                                       else ""))
    img_by_stem: dict[str, Path] = {}
    for img in imgs:
        if img.stem in img_by_stem:
            raise TrainingDataError(f"{img}: two images with the stem {img.stem!r} ({img_by_stem[img.stem]} and "
                                    f"{img}): labels pair with images by stem; keep one of them")
        img_by_stem[img.stem] = img
    by_stem: dict[str, Path] = {}
    for lab in labs:
        stem = lab.stem
        for suf in _LABEL_SUFFIXES[1:] if stem not in img_by_stem else ():  # the same stem pairs first
            if stem.endswith(suf):
                stem = stem[: -len(suf)]
                break
        if stem in by_stem and by_stem[stem] != lab:
            raise TrainingDataError(f"{labels_dir}: two label files for image stem {stem!r}: {by_stem[stem].name}, {lab.name}")
        by_stem[stem] = lab
    pairs, missing = [], []
    for img in imgs:
        lab = by_stem.pop(img.stem, None)
        if lab is None:
            missing.append(img.name)
        else:
            pairs.append((img, lab))
    if not pairs:
        raise TrainingDataError(f"{images_dir}: no image has a label file with the same stem in {labels_dir}")
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise TrainingDataError(f"{labels_dir}: no labels for images {', '.join(missing[:5])}{more}")
    if by_stem:
        extra = sorted(p.name for p in by_stem.values())
        raise TrainingDataError(f"{images_dir}: no image for label files {', '.join(extra[:5])}")
    return pairs


def load_pairs(images_dir: str | Path, labels_dir: str | Path, encoding: str, info: dict | None = None
               ) -> tuple[list[tuple[Path, Path]], list[np.ndarray], list[np.ndarray]]:
    """``(pairs, images, labels)`` of two folders matched by stem (:func:`find_pairs`, sorted by file name), the
    labels in the training convention (0 = unlabelled, c = class c) read with ``encoding``.  ``info`` (a dict, if
    given) receives the images' ``pixel_sizes`` (None when uncalibrated) and the reader's ``warnings``."""
    from micro_seg.io import labels_are_instances

    pairs = find_pairs(images_dir, labels_dir)
    images, labels, grey_masks = [], [], []
    for img_path, lab_path in pairs:
        if encoding != "mask" and labels_are_instances(lab_path):  # each grain its own number: not class values
            raise TrainingDataError(
                f"{lab_path}: an instance label image (each grain or object its own number, as micro-seg segment and "
                f"batch write them for a grain model or a defect class), not class labels: --label-encoding "
                f"{encoding} would make a class of every object; give class labels (0 = unlabelled, c = class c, "
                "e.g. from napari's Annotate widget), or --label-encoding mask to train objects against background")
        img, bar = _read_image(img_path, info)
        lab = _read_label(lab_path, encoding, grey_masks)
        if bar and lab.shape == (img.shape[0] - bar, img.shape[1]):
            img = img[: img.shape[0] - bar]  # labels of the area segment analyses (the image without its data bar)
        if img.shape[:2] != lab.shape:
            area = f" ({img.shape[0] - bar} x {img.shape[1]} without its data bar)" if bar else ""
            raise TrainingDataError(
                f"{lab_path}: labels are {lab.shape[0]} x {lab.shape[1]} but image {img_path.name} is "
                f"{img.shape[0]} x {img.shape[1]} pixels{area}"
            )
        images.append(img)
        labels.append(lab)
    if info is not None and grey_masks:  # one warning, however many masks
        info.setdefault("warnings", []).append(_grey_masks_warning(grey_masks))
    return pairs, images, labels


def _grey_masks_warning(paths: list[Path]) -> str:
    """One warning for the masks with grey values: the file, or their count and the first few names."""
    said = "every non-zero pixel is read as foreground"
    if len(paths) == 1:
        return f"{paths[0]}: mask has grey values between 0 and 255 (anti-aliased edges?); {said}"
    more = f" (and {len(paths) - 3} more)" if len(paths) > 3 else ""
    return (f"{paths[0].parent}: {len(paths)} masks have grey values between 0 and 255 (anti-aliased edges?): "
            f"{', '.join(p.name for p in paths[:3])}{more}; {said}")


def recorded_classes(labels_dir: str | Path, label_paths: list[Path], encoding: str
                     ) -> tuple[list[str] | None, str | None, list[str]]:
    """Class names the training data records: ``(names, where, warnings)``.

    * ``classes.json`` in LABELS_DIR or its parent (the napari Annotate layout; sparse: value i = classes[i-1]);
    * else the names every label file records (:func:`micro_seg.io.labels_classes`: class maps written by
      ``micro-seg segment``, value v = classes[v], i.e. ``--label-encoding dense``).

    ``names`` is None when nothing usable is recorded for ``encoding``; ``warnings`` says why recorded names do
    not fit it (a class map read as sparse would take its first class for "unlabelled").
    """
    import json

    from micro_seg.io import CLASS_SCHEMA_FILE, labels_classes

    labels_dir = Path(labels_dir)
    for schema in (labels_dir / CLASS_SCHEMA_FILE, labels_dir.parent / CLASS_SCHEMA_FILE):
        if not schema.is_file():
            continue
        try:
            data = json.loads(schema.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, None, [f"{schema}: not a readable class schema (JSON); its class names are not used"]
        names = data.get("classes") if isinstance(data, dict) else None
        if not (isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names)):
            return None, None, [f"{schema}: no list of class names under 'classes'; not used"]
        if encoding != "sparse":
            return None, None, [f"{schema}: its classes are coded 0 = unlabelled, i = classes[i-1] (sparse), not "
                                f"--label-encoding {encoding}; its names are not used"]
        return [n.strip() for n in names], str(schema), []
    found = {}
    for path in label_paths:
        names = labels_classes(path)
        found.setdefault(tuple(names) if names else None, []).append(path)
    recorded = [k for k in found if k is not None]
    if not recorded:
        return None, None, []
    if len(found) > 1:
        first, second = recorded[0], (recorded[1] if len(recorded) > 1 else None)
        other = f"{found[second][0].name} records {', '.join(second)}" if second else \
            f"{found[None][0].name} records none"
        return None, None, [f"{labels_dir}: the label files record different class names ({found[first][0].name} "
                            f"records {', '.join(first)}; {other}); none are used"]
    names = list(recorded[0])
    where = f"{labels_dir} (class names recorded in the label files)"
    if encoding == "mask" and len(names) == 2:  # a two-class map read as a mask: 0 = the first, 1 = the second
        return names, where, []
    if encoding != "dense":
        return None, None, [f"{where}: they are class maps (value 0 = {names[0]!r}, as micro-seg segment writes "
                            f"them); with --label-encoding {encoding} value 0 is read as unlabelled, so "
                            f"{names[0]!r} is never trained: use --label-encoding dense"]
    return names, where, []


def check_numeric_options(args: argparse.Namespace) -> None:
    """Refuse training options out of range, naming the flag, before any image is read."""
    import math

    whole = [("--epochs", args.epochs, 1), ("--patch-size", args.patch_size, 8), ("--batch-size", args.batch_size, 1),
             ("--patches-per-epoch", args.patches_per_epoch, 1), ("--patience", args.patience, 0),
             ("--threads", args.threads, 1), ("--seed", args.seed, 0), ("--split-seed", args.split_seed, 0)]
    for flag, value, low in whole:
        if value is not None and value < low:
            raise TrainingDataError(f"{flag} must be a whole number >= {low}, got {value}")
    if not 0 <= args.val_fraction < 1:  # also NaN
        raise TrainingDataError(f"--val-fraction must be at least 0 and below 1 (the fraction of the images held out "
                                f"for validation), got {args.val_fraction}")
    for flag, value in (("--lr", args.lr), ("--minutes", args.minutes)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise TrainingDataError(f"{flag} must be a positive number, got {value}")
    if not (math.isfinite(args.dice_weight) and args.dice_weight >= 0):
        raise TrainingDataError(f"--dice-weight must be a number >= 0, got {args.dice_weight}")
    if args.input_scale is not None:
        from micro_seg.training import check_input_scale

        check_input_scale(args.input_scale, "--input-scale")
    for folder, what in ((args.images_dir, "images"), (args.labels_dir, "labels")):
        if Path(args.out).resolve() == Path(folder).resolve():
            raise TrainingDataError(f"{args.out}: --out is the {what} folder; give the model its own folder")
    check_output_folder(args.out, "--out")
    check_output_folder(args.checkpoint_dir or Path(args.out) / "checkpoint",
                        "--checkpoint-dir" if args.checkpoint_dir else "--out")


#: A patch more than this many times the largest training image's side is refused (over 98% padding);
#: between the image size and this, training warns (see :func:`micro_seg.training.patch_size_advice`).
MAX_PATCH_TO_IMAGE = 8


def _check_patch_size(args: argparse.Namespace, images: list) -> None:
    """Refuse a --patch-size many times larger than every training image (it trains on padding, slowly)."""
    scale = args.input_scale or 1.0
    side = max(max(np.shape(im)[:2]) for im in images) * scale
    if args.patch_size > MAX_PATCH_TO_IMAGE * side:
        raise TrainingDataError(
            f"--patch-size {args.patch_size} is more than {MAX_PATCH_TO_IMAGE} times the largest training image "
            f"side ({side:.0f} px as the network sees it): the patches would be almost all padding; "
            f"use --patch-size {max(16, int(np.ceil(side / 16)) * 16)}")


def _copies_across_split(pairs: list[tuple[Path, Path]], images: list[np.ndarray], val_idx: list[int]) -> list[str]:
    """A warning when validation images are pixel-identical copies of training images (their figures are then
    no measure on unseen images), as train-classifier warns."""
    import hashlib

    def digest(image: np.ndarray) -> str:
        a = np.ascontiguousarray(image)
        return hashlib.sha256(f"{a.shape}{a.dtype.str}".encode() + a.tobytes()).hexdigest()

    if not val_idx:
        return []
    hashes = [digest(im) for im in images]
    trained = {hashes[i]: pairs[i][0] for i in range(len(images)) if i not in val_idx}
    copies = [(pairs[i][0], trained[hashes[i]]) for i in val_idx if hashes[i] in trained]
    if not copies:
        return []
    v, t = copies[0]
    return [f"{len(copies)} validation image(s) are pixel-identical copies of training images (e.g. {v} = {t}): the "
            "validation figures on the card (and the logit offsets chosen on them) are optimistic; remove the copies"]


def _record_stamp(ckpt: Path) -> int | None:
    """When the checkpoint record in ``ckpt`` was last written (ns), or None if there is none."""
    from micro_seg.training import CHECKPOINT_RECORD

    try:
        return (ckpt / CHECKPOINT_RECORD).stat().st_mtime_ns
    except OSError:
        return None


def _resume_hint(ckpt: Path, epochs: int, before: int | None) -> str:
    """How to go on from the checkpoint a stopped run wrote in ``ckpt``, or "" when it wrote none (its record is
    still the one stamped ``before`` the run: another run's, or none)."""
    import json

    from micro_seg.training import CHECKPOINT_RECORD

    stamp = _record_stamp(ckpt)
    if stamp is None or stamp == before:
        return ""
    try:
        done = int(json.loads((ckpt / CHECKPOINT_RECORD).read_text(encoding="utf-8"))["epoch"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return (f"the checkpoint {ckpt} holds {done} of the {epochs} epochs: the same command with --resume continues "
            f"from there (with --resume --epochs {done}, it writes the model from it now)")


def run(args: argparse.Namespace) -> dict:
    from micro_seg.augment import augment_preset
    from micro_seg.training import (
        TrainingDivergedError,
        check_grain_classes,
        check_pseudo_label_threshold,
        train_segmenter,
        trained_pixel_size_range,
    )

    check_numeric_options(args)
    warnings: list[str] = []  # every warning printed goes into the JSON output too

    def warn(text: str) -> None:
        warnings.append(text)
        print(f"warning: {text}", file=sys.stderr, flush=True)

    read_info: dict = {}
    pairs, images, labels = load_pairs(args.images_dir, args.labels_dir, args.label_encoding, read_info)
    for warning in read_info.get("warnings", ()):  # e.g. only page 0 of a stack is trained on
        warn(warning)
    _check_patch_size(args, images)
    max_label = max(int(l.max()) for l in labels)
    base_card = None
    if args.base:
        from micro_seg.registry import load_model, resolve_model

        base_ref = args.base
        if Path(args.base).expanduser().resolve() == Path(args.out).expanduser().resolve():
            # --out NAME --base NAME (a fine-tune named after its base): ./NAME is this training's own output; while
            # it has no card yet (a --resume), the base is the registered model of that name
            base_ref = resolve_model(args.base, registered=not (Path(args.out) / "card.yaml").is_file())
        base = load_model(base_ref)
        base_card = base.card
    named, named_where, named_warnings = recorded_classes(args.labels_dir, [lab for _, lab in pairs],
                                                          args.label_encoding)
    for warning in named_warnings:
        warn(warning)
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    elif base_card is not None:
        classes = list(base_card.classes)
    elif named:
        classes = named
        print(f"note: classes {', '.join(classes)} from {named_where}", file=sys.stderr, flush=True)
    else:
        # classes inferred from the largest label value: at most the limit `measure phases` puts on a class map;
        # more means the labels are almost surely a micrograph (a grey image has ~200 distinct values)
        from micro_seg.measure.phases import MAX_CLASSES as MAX_INFERRED_CLASSES

        if max_label > MAX_INFERRED_CLASSES:
            where = next(lab for (_, lab), l in zip(pairs, labels) if int(l.max()) == max_label)
            mask = _binary_mask_hint(labels, args.label_encoding)
            raise TrainingDataError(
                f"{where}: label value {max_label} would make {max_label} classes (at most {MAX_INFERRED_CLASSES} "
                + (f"are inferred): {mask}" if mask else
                   "are inferred): the labels look like a micrograph, not a label image (0 = unlabelled, c = class c); "
                   "check LABELS_DIR, or name the classes with --classes"))
        classes = [f"class{i}" for i in range(1, max(2, max_label) + 1)]
    if named and classes != named:
        given = "--classes" if args.classes else f"the base model {base_card.name!r}"
        warn(f"{given} names the classes {', '.join(classes)} but {named_where} says {', '.join(named)}: check "
             "that label value c means the class you think")
    if max_label > len(classes):
        where, value = next((lab, int(l.max())) for (_, lab), l in zip(pairs, labels) if int(l.max()) > len(classes))
        if args.label_encoding == "dense":  # the file holds value - 1 (0-based)
            raise TrainingDataError(
                f"{where}: label value {value - 1} found but only {len(classes)} classes ({', '.join(classes)}); "
                "with --label-encoding dense, value v = class v + 1 (0 = the first class)")
        mask = _binary_mask_hint(labels, args.label_encoding)
        raise TrainingDataError(
            f"{where}: label value {value} found but only {len(classes)} classes "
            f"({', '.join(classes)}); 0 = unlabelled, class c = value c" + (f"; {mask}" if mask else "")
        )
    counts = np.zeros(len(classes) + 1, np.int64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=len(classes) + 1)[: len(classes) + 1]
    missing = [c for c in range(1, len(classes) + 1) if counts[c] == 0]
    mask = _binary_mask_hint(labels, args.label_encoding) if missing else ""  # 0/1 masks: 0 read as unlabelled
    for c in missing:
        warn(f"{args.labels_dir}: class {classes[c - 1]!r} (label value {c}) has no labelled pixel in any label image: "
             "the model cannot learn it and validation cannot measure it (the mean IoU leaves it out)"
             + (f"; {mask}" if mask else ""))
    class_weights = _parse_class_weights(args.class_weights, len(classes))
    if not 0 <= args.rare_class_fraction <= 1:
        raise TrainingDataError(f"--rare-class-fraction must be in [0, 1], got {args.rare_class_fraction}")
    if args.pseudo_labels is not None:
        if not args.base:
            raise TrainingDataError("--pseudo-labels needs --base: the pseudo-labels are the base model's predictions")
        check_pseudo_label_threshold(args.pseudo_labels, "--pseudo-labels")
    task = args.task or (base_card.task if base_card is not None else "semantic")
    if task == "grains":
        check_grain_classes(classes, "--classes" if args.classes else "the classes")
    out = Path(args.out)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out / "checkpoint"
    if not args.resume:
        note_model_replaced(out)
    if args.resume and not (ckpt / "last.json").exists():
        print(f"note: --resume: no checkpoint found in {ckpt}; training starts from the beginning",
              file=sys.stderr, flush=True)

    def progress(ev: dict) -> None:
        for warning in ev.get("warnings") or ():  # patch size mostly padding, no validation; also with --quiet
            warn(warning + (" (--patch-size)" if warning.startswith("patch size") else ""))
        if args.quiet or args.json and ev["stage"] == "step":
            return
        if ev["stage"] == "epoch":
            v = ev.get("val") or {}
            miou = v.get("mean_iou")
            tail = f" val mIoU {miou:.4f}" if miou is not None else ""
            print(f"epoch {ev['epoch'] + 1}/{ev['epochs']} loss {ev['loss']:.4f}{tail} ({ev['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)

    kwargs = dict(
        classes=classes, task=task, epochs=args.epochs, patch_size=args.patch_size, batch_size=args.batch_size,
        patches_per_epoch=args.patches_per_epoch,
        lr=args.lr if args.lr is not None else (1e-3 if args.base else 3e-3), val_fraction=args.val_fraction,
        patience=args.patience, seed=args.seed, split_seed=args.split_seed, time_limit_s=args.minutes * 60 if args.minutes else None,
        class_weights=class_weights, dice_weight=args.dice_weight, rare_class_fraction=args.rare_class_fraction,
        calibrate=not args.no_calibrate, keep=args.keep,
        augment=augment_preset(args.augment, keep_orientation=args.keep_orientation), input_scale=args.input_scale,
        pseudo_label_threshold=args.pseudo_labels, checkpoint_dir=ckpt, resume=args.resume, num_threads=args.threads, progress=progress,
        name=args.name or out.name, out=out,
    )
    # the card says at which pixel sizes the model was trained (segmenting far outside warns): those of the
    # training images, not a base model's; unknown when some images are uncalibrated
    kwargs["card_extra"] = {"pixel_size_um_range": trained_pixel_size_range(read_info.get("pixel_sizes") or ())}
    if args.material and args.material.strip():
        kwargs["card_extra"]["material"] = args.material.strip()
    if args.base:
        kwargs["base"] = base
    else:
        kwargs["arch"] = args.arch
    out_existed = out.exists()
    # the checkpoint a stopped run can be continued from: one it wrote, or the one --resume continued (even when
    # stopped before its next epoch ended, the record still holds the epochs done)
    before = None if args.resume else _record_stamp(ckpt)
    try:
        net, card, history = train_segmenter(images, labels, **kwargs)
    except TrainingDivergedError:
        if not out_existed:  # only this run's checkpoint of a diverged run is in it: leave no model folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    except OutputPathError as exc:  # disk full: the epochs checkpointed so far are not lost
        hint = _resume_hint(ckpt, args.epochs, before)
        raise OutputPathError(f"{exc}; {hint}" if hint else str(exc)) from exc
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: say where the work done is and how to go on
        hint = _resume_hint(ckpt, args.epochs, before)
        if hint:
            print(f"note: training stopped; {hint}", file=sys.stderr, flush=True)
        raise
    for warning in _copies_across_split(pairs, images, card.training_data.get("val_indices") or []):
        warn(warning)
    val = card.metrics.get("validation", {})
    return {
        "model": str(out),
        "name": card.name,
        "task": card.task,
        "classes": card.classes,
        "arch": card.arch,
        "input_scale": card.input_scale,
        "n_images": len(pairs),
        "epochs_run": len(history),
        "best_epoch": card.extra.get("training", {}).get("best_epoch"),
        "validation": {k: val.get(k) for k in ("iou", "mean_iou", "weighted_iou", "accuracy")} if val else None,
        "validation_images": [pairs[i][0].name for i in card.training_data.get("val_indices", [])],
        "logit_offsets": card.extra.get("training", {}).get("logit_offsets"),
        "seconds": card.extra.get("training", {}).get("seconds"),
        "sha256": card.weights_sha256,
        "warnings": warnings,
    }
