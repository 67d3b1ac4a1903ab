"""``micro-seg classify IMAGE... --model NAME_OR_PATH``: classify whole images.

One image prints ``{"path", "class", "probabilities": {...}, "confidence",
"ood_score", "ood_threshold", "ood", ...}``; several print ``{"results":
[...]}``.  Probabilities are temperature-calibrated; ``ood`` is true when the
image is unlike the model's training images (see :mod:`micro_seg.classifier`).

Examples
--------
>>> from micro_seg.cli import main
>>> main(["classify", "part.png", "--model", "clf", "--json"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from micro_seg.commands import add_databar_option

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``classify`` sub-command."""
    p = subparsers.add_parser(
        "classify",
        help="classify whole images with a classification model",
        description="Classify images with a model trained by train-classifier: calibrated class probabilities "
        "and an out-of-distribution score.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s)")
    p.add_argument("--model", required=True, help="classification model name or folder")
    p.add_argument("--grad-cam", default=None, metavar="DIR",
                   help="also write a Grad-CAM heat map <stem>_gradcam.tif per image to DIR (of the analysed area: an SEM "
                   "data bar is left out, so the map is shorter than such an image)")
    add_databar_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Classify each image; one image -> flat dict, several -> ``{"results": [...]}``."""
    from micro_seg.classifier import classify_batch, grad_cam, load_classifier
    from micro_seg.io import check_output_folder
    from micro_seg.errors import InputFileNotFoundError, OutputPathError
    from micro_seg.io import read_micrograph

    for path in args.images:
        if Path(path).is_dir():
            raise InputFileNotFoundError(f"{path}: is a folder, not an image file (give the image files, e.g. {path}/*.tif)")
        if not Path(path).is_file():
            raise InputFileNotFoundError(f"{path}: image file not found")
    check_output_folder(args.grad_cam, "--grad-cam")
    if args.grad_cam:  # one heat map per image: two inputs must not share <stem>_gradcam.tif
        seen: dict[str, str] = {}
        for path in args.images:
            stem = Path(path).stem
            if stem in seen and Path(seen[stem]).resolve() != Path(path).resolve():
                raise OutputPathError(f"{path}: its Grad-CAM map would replace that of {seen[stem]} (same name stem "
                                      f"{stem!r}); classify them with different --grad-cam folders")
            seen[stem] = str(path)
    model = load_classifier(args.model)
    micrographs = [read_micrograph(p, databar_rows=getattr(args, "databar_rows", None)) for p in args.images]
    results = classify_batch(micrographs, model)
    for path, m, r in zip(args.images, micrographs, results):
        r["path"] = str(path)
        r["databar_rows"] = int(m.databar_rows)  # the area classified: above the SEM data bar
        r["databar_source"] = m.meta.get("databar_source")
        if args.grad_cam:
            import tifffile

            out = Path(args.grad_cam)
            out.mkdir(parents=True, exist_ok=True)
            cam_path = out / f"{Path(path).stem}_gradcam.tif"
            # the class reported (after flip averaging and the card's decision rule), not the raw argmax
            tifffile.imwrite(cam_path, grad_cam(m, model, target_class=r["class"]))
            r["grad_cam"] = str(cam_path)
            r["grad_cam_class"] = r["class"]
    if len(results) == 1:
        return {"path": results[0].pop("path"), **results[0]}
    return {"results": results}
