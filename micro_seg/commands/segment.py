"""``micro-seg segment IMAGE --model NAME --out DIR``: segment one micrograph.

Writes ``DIR/<stem>_labels.tif`` (``<stem>_p<N>_labels.tif`` for ``--page N``,
N >= 1) with the image's calibration -- grain
instance labels (each grain its own integer, 0 = boundary) for grain models,
class labels (value i = ``classes[i]``) for semantic models -- and, with
``--probabilities``, ``DIR/<stem>_probabilities.tif`` (float32, one page per
class, in card order).  The SEM data bar, if any, is excluded.  A labels file
that segment did not write for this image (ground truth, another image's labels
with the same stem) is never replaced: the run is refused before any work.

Examples
--------
>>> from micro_seg.cli import main
>>> main(["segment", "a.tif", "--model", "grain-boundaries", "--out", "out", "--json"])  # doctest: +SKIP
{"labels": "out/a_labels.tif", "classes": ["grain", "boundary"], "seconds": 0.8, ...}
0
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from micro_seg.commands import PAGE_HELP, add_databar_option

__all__ = ["register", "run", "add_model_options", "add_segment_options", "given_postprocess_options",
           "given_predict_options", "segment_file", "write_probabilities"]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``segment`` and ``analyze``."""
    parser.add_argument("image", help="micrograph (TIFF, PNG, JPEG, BMP)")
    parser.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                        help="model name (see 'micro-seg models list') or model folder")
    parser.add_argument("--pixel-size", type=float, metavar="UM", dest="pixel_size",
                        help="micrometres per pixel; overrides the calibration in the file")
    add_databar_option(parser)
    add_segment_options(parser)
    parser.add_argument("--page", type=int, metavar="N",
                        help=PAGE_HELP + "; segment names its outputs <stem>_p<N>_... for N >= 1")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_segment_options(parser: argparse.ArgumentParser) -> None:
    """How to segment (inference and grain post-processing): ``segment``, ``analyze`` and ``batch``."""
    parser.add_argument("--tile-size", type=int, metavar="PX", dest="tile_size",
                        help="inference tile side in pixels (default: the model card's, at least 1024)")
    parser.add_argument("--overlap", type=int, metavar="PX", help="tile overlap in pixels (default: tile/16, at least 32; rounded up to the network's stride). "
                        "Less than about 64 px leaves seams: on the grain model, tiles of 512 with 32 px of overlap lost "
                        "4 of 750 grains (G -0.005) against one tile; 64 px lost at most 1")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (4 flips; 4x slower)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="run the network with torch (default) or ONNX Runtime "
                        "(needs: pip install \"micro-seg[onnx]\")")
    parser.add_argument("--min-grain", type=int, default=None, metavar="PX", dest="min_grain",
                        help="grain models: merge grains smaller than PX pixels (default: the model card's, else 16)")
    parser.add_argument("--boundary-threshold", type=float, default=None, metavar="P", dest="boundary_threshold",
                        help="grain models: boundary probability above which a pixel is boundary "
                        "(default: the model card's, else 0.5)")
    parser.add_argument("--split-ratio", type=float, default=None, metavar="R", dest="split_ratio",
                        help="grain models: split two grain cores joined by a neck R times narrower than the smaller "
                        "core; raise it if grains are over-split, lower it if grains behind faded boundaries merge; "
                        "0 = never (default: the model card's, else 2)")
    parser.add_argument("--marker-threshold", type=float, default=None, metavar="P", dest="marker_threshold",
                        help="grain models: take grain cores from boundary probability <= P, below "
                        "--boundary-threshold, so faint boundaries between the two split grains; a value at or above "
                        "the boundary threshold turns it off (default: the model card's, which a --boundary-threshold "
                        "given alone turns off)")


def register(subparsers: Any) -> None:
    """Add the ``segment`` sub-command to the CLI."""
    parser = subparsers.add_parser(
        "segment",
        help="segment a micrograph with a model; write labels (and probabilities)",
        description="Segment a micrograph with a CNN model and write the label image with its calibration.",
    )
    add_model_options(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write <stem>_probabilities.tif (float32, one page per class)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <stem>_uncertainty.tif (normalised entropy 0..1)")
    parser.set_defaults(func=run)


#: Grain post-processing option -> the command-line flag that sets it.
POSTPROCESS_FLAGS = {"min_grain_px": "--min-grain", "threshold": "--boundary-threshold", "split_ratio": "--split-ratio",
                     "marker_threshold": "--marker-threshold"}


def given_postprocess_options(args: argparse.Namespace) -> dict[str, Any]:
    """Grain post-processing options given on the command line, checked (the card's own defaults fill the rest)."""
    from micro_seg.registry import check_postprocess_values

    given = {"min_grain_px": args.min_grain, "threshold": args.boundary_threshold, "split_ratio": args.split_ratio,
             "marker_threshold": args.marker_threshold}
    given = {k: v for k, v in given.items() if v is not None}
    check_postprocess_values(given, names=POSTPROCESS_FLAGS)
    return given


#: Smallest --tile-size: smaller tiles leave no room for an overlap at the networks' stride of 16 px,
#: so neighbouring tiles would meet in seams (the engine itself accepts any tile of one stride or more).
MIN_CLI_TILE_SIZE = 64


def given_predict_options(args: argparse.Namespace) -> dict[str, Any]:
    """Inference options given on the command line; the defaults (the card's tile size, no TTA, torch) left out."""
    from micro_seg.errors import ModelError

    if args.tile_size is not None and args.tile_size < MIN_CLI_TILE_SIZE:
        raise ModelError(f"--tile-size {args.tile_size}: at least {MIN_CLI_TILE_SIZE} px (default: the model card's, at least 1024)")
    if args.overlap is not None and not 0 <= args.overlap < (args.tile_size or 1 << 30):
        raise ModelError(f"--overlap {args.overlap}: must be >= 0 and smaller than the tile size")
    given = {"tile_size": args.tile_size, "overlap": args.overlap, "tta": args.tta or None,
             "backend": None if args.backend == "torch" else args.backend}
    return {k: v for k, v in given.items() if v is not None}


def _postprocess_options(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """Grain post-processing options given on the command line; refused for a model that is not a grain model."""
    from micro_seg.errors import ModelError

    given = given_postprocess_options(args)
    if given and model.card.task != "grains":
        flags = ", ".join(POSTPROCESS_FLAGS[k] for k in given)
        raise ModelError(f"{flags} applies to grain models only; model '{model.card.name}' is a "
                         f"{model.card.task} model (classes: {', '.join(model.card.classes)})")
    return given


#: An integer image whose analysed area spans at most this many grey levels (but more than one) has
#: almost no contrast: its segmentation is noise stretched by the normalisation (warning).
LOW_CONTRAST_LEVELS = 2


def contrast_check(micrograph: Any, what: str) -> list[str]:
    """Warnings for an image without contrast (every analysed pixel equal) or with almost none.

    A constant image normalised and segmented gives a meaningless map (phase
    fractions, one "grain") that looks like a result.  It is measured with
    this warning rather than refused, so that a blank page of a stack still
    goes through a batch.  The data bar is left out.  ``what`` (the file) starts each warning; ``""`` for none
    (napari names the layer itself).

    Examples
    --------
    >>> import numpy as np
    >>> from micro_seg.io import Micrograph
    >>> contrast_check(Micrograph(np.arange(12, dtype=np.uint8).reshape(3, 4), None, None), "a.png")
    []
    >>> contrast_check(Micrograph(np.full((3, 4), 7, np.uint8), None, None), "a.png")[0][:60]
    'a.png: the image is constant (every pixel 7): it has no cont'
    """
    import numpy as np

    data = micrograph.analysis_data
    if data.size == 0:
        return []
    what = f"{what}: " if what else ""
    lo = np.min(data, axis=(0, 1))
    hi = np.max(data, axis=(0, 1))
    if np.all(lo == hi):
        return [f"{what}the image is constant (every pixel {np.asarray(lo).tolist()}): it has no contrast, so "
                "the segmentation and every number measured from it are meaningless"]
    span = float(np.max(np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)))
    if data.dtype.kind in "uib" and span <= LOW_CONTRAST_LEVELS:
        return [f"{what}almost no contrast (grey values span only {span + 1:.0f} levels): the segmentation "
                "and every number measured from it are probably meaningless"]
    return []


def segment_file(args: argparse.Namespace, *, keep_probabilities: bool = False, keep_prediction: bool = True,
                 check_contrast: bool = False):
    """Read ``args.image``, load ``args.model`` and segment: ``(micrograph, Segmentation)``.

    The micrograph comes back with its calibration and metadata but without its pixels (released after
    inference, so a huge image is post-processed without them).  ``keep_prediction=False``: the
    Segmentation keeps only what measuring needs (see :func:`~micro_seg.postprocess.segment_image`).
    ``check_contrast``: record a warning for an image without contrast (constant) or with almost none in
    ``micrograph.meta["contrast_warnings"]`` (:func:`contrast_check`).
    """
    from micro_seg.io import read_micrograph
    from micro_seg.postprocess import segment_image
    from micro_seg.registry import load_model

    micrograph = read_micrograph(args.image, pixel_size_um=args.pixel_size, page=args.page,
                                 databar_rows=getattr(args, "databar_rows", None))
    if check_contrast:
        micrograph.meta["contrast_warnings"] = contrast_check(micrograph, str(args.image))
    model = load_model(args.model)
    predict_options = given_predict_options(args)
    if getattr(args, "uncertainty", False) is False:
        predict_options["keep_uncertainty"] = False
    seg = segment_image(
        micrograph,
        model,
        pixel_size_um=micrograph.pixel_size_um,
        keep_probabilities=keep_probabilities,
        postprocess_options=_postprocess_options(args, model),
        release_image=True,  # the commands need only the calibration afterwards: post-process without the pixels
        keep_prediction=keep_prediction,
        **predict_options,
    )
    return micrograph, seg


def write_probabilities(path: Path, probabilities, *, classes: list[str], pixel_size_um: float | None) -> Path:
    """Write a ``(classes, rows, cols)`` probability stack as a float32 TIFF with calibration."""
    import json
    import os

    import numpy as np
    import tifffile

    from micro_seg.errors import MicroSegError

    kwargs: dict[str, Any] = {}
    if pixel_size_um:
        px_per_cm = 1e4 / pixel_size_um
        kwargs = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
    desc = json.dumps({"micro_seg": {"kind": "probabilities", "classes": list(classes), "pixel_size_um": pixel_size_um}})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")  # hidden and per process, as write_labels does
    try:
        tifffile.imwrite(tmp, np.asarray(probabilities, dtype=np.float32), compression="zlib",
                         photometric="minisblack", description=desc, metadata=None, **kwargs)
        tmp.replace(path)
    except OSError as exc:
        raise MicroSegError(f"{path}: cannot write probabilities ({exc.strerror or exc})") from exc
    finally:  # a failed write (disk full, the name taken by a folder) leaves no partial file behind
        if tmp.exists():
            tmp.unlink()
    return path


def _refuse_names_too_long(args: argparse.Namespace, out: Path, stem: str) -> None:
    """Refuse, before the work, an image whose output file names would pass the 255 bytes a file name may have (a
    long name, or ~80 CJK characters at 3 bytes each): it was 'internal error: OSError: File name too long'."""
    from micro_seg.errors import OutputPathError

    names = {f"{stem}_labels.tif": f"{stem}_labels.tif"}  # write_labels cuts its temporary name to fit
    for suffix, asked in (("_probabilities.tif", args.probabilities), ("_uncertainty.tif", args.uncertainty)):
        if asked:  # written through .<name>.<pid>.part (write_probabilities)
            names[f"{stem}{suffix}"] = f".{stem}{suffix}.{os.getpid()}.part"
    for name, longest in names.items():
        if len(os.fsencode(longest)) > 255:
            raise OutputPathError(f"{args.image}: its name is too long for segment's output {out / name} (a file "
                                  "name may have 255 bytes): rename or copy the image to a shorter name (micro-seg "
                                  "batch shortens such names itself)")


def _refuse_foreign_labels(labels_path: Path, image: str) -> list[str]:
    """Refuse to replace a ``<stem>_labels.tif`` that segment did not write for this image: labels that record no
    source image (hand-traced ground truth named the way ``train`` pairs labels, annotations, another tool's) or
    another existing image's labels (same name stem).  Labels whose recorded image no longer exists (a moved
    project) are replaced, with the warning returned."""
    from micro_seg.errors import OutputPathError
    from micro_seg.io import labels_source

    if not labels_path.exists() and not labels_path.is_symlink():
        return []
    earlier = labels_source(labels_path) if labels_path.is_file() else None
    if earlier is None:
        raise OutputPathError(f"{labels_path}: already exists and records no source image (ground truth, annotations, "
                              "another tool's labels?); it is not replaced: give another --out or move it")
    if earlier == str(Path(image).resolve()):
        return []
    if Path(earlier).exists():
        raise OutputPathError(f"{labels_path}: holds the labels of another image, {earlier} (same name stem); it is "
                              "not replaced: segment images that share a stem into different --out folders")
    return [f"{labels_path}: replaced labels recorded as made from {earlier}, which no longer exists (a moved or "
            "renamed folder?)"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Segment ``args.image``; JSON ``{"labels", "classes", "seconds", ...}``."""
    import time

    from micro_seg.errors import MicroSegError
    from micro_seg.io import check_output_folder, write_labels

    t0 = time.perf_counter()
    out = Path(args.out)
    check_output_folder(out, "--out")  # refused before the work, but made only when there is something to write
    stem = Path(args.image).stem + (f"_p{args.page}" if args.page else "")  # pages of one file never collide
    labels_path = out / f"{stem}_labels.tif"
    _refuse_names_too_long(args, out, stem)
    replaced = _refuse_foreign_labels(labels_path, args.image)  # before the work: never lost
    micrograph, seg = segment_file(args, keep_probabilities=args.probabilities, check_contrast=True)
    card, px = seg.card, micrograph.pixel_size_um
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MicroSegError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    from micro_seg.batch_worker import sweep_stale_temporaries

    sweep_stale_temporaries(out)  # what an earlier segment killed mid-write left (its process gone)
    write_labels(labels_path, seg.labels, pixel_size_um=px, classes=None if card.task == "grains" else card.classes,
                 source=args.image, instances=card.task == "grains")
    result: dict[str, Any] = {
        "labels": str(labels_path),
        "classes": list(card.classes),
        "seconds": round(time.perf_counter() - t0, 3),
        "model": card.name,
        "task": card.task,
        "label_kind": "grain_instances" if card.task == "grains" else "classes",
        "pixel_size_um": px,
        "shape": list(seg.labels.shape),
        "databar_rows": micrograph.databar_rows,
        "databar_source": micrograph.meta.get("databar_source"),
    }
    if card.task == "grains":
        result["n_grains"] = int(seg.labels.max())
    if args.probabilities:
        path = out / f"{stem}_probabilities.tif"
        result["probabilities"] = str(write_probabilities(path, seg.prediction.probabilities,
                                                          classes=card.classes, pixel_size_um=px))
    if args.uncertainty:
        path = out / f"{stem}_uncertainty.tif"
        result["uncertainty"] = str(write_probabilities(path, seg.prediction.uncertainty[None],
                                                        classes=["uncertainty"], pixel_size_um=px))
    for name, inst in seg.result.defects.items():
        path = out / f"{stem}_{name}_instances.tif"
        write_labels(path, inst, pixel_size_um=px, instances=True)
        result.setdefault("defect_instances", {})[name] = str(path)
    result["warnings"] = (micrograph.meta["contrast_warnings"] + micrograph.reader_warnings + list(seg.warnings)
                          + replaced + ([] if px else ["no pixel size: measurements will be in pixels"]))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
