"""``micro-seg train-classifier DATA_DIR --out MODEL_DIR``: train an image classifier.

``DATA_DIR`` holds one sub-folder per class (searched recursively).  A
stratified validation split is held out; the model folder gets the weights
(safetensors, sha256 in the card) and a card with the validation confusion
matrix, per-class precision / recall / F1, the calibration temperature and the
out-of-distribution threshold (see :mod:`micro_seg.classifier`).

Examples
--------
>>> from micro_seg.cli import main
>>> main(["train-classifier", "data", "--out", "clf", "--epochs", "20"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any

from micro_seg.commands import note_model_replaced

__all__ = ["register", "run"]

# kept in step with micro_seg.classifier.ARCHITECTURES (tests/test_headless.py checks it)
CLASSIFIER_ARCHITECTURES = ("mscls", "mscls-l", "mscls-s")


def register(subparsers: Any) -> None:
    """Add the ``train-classifier`` sub-command (torch is imported only when it runs)."""
    p = subparsers.add_parser(
        "train-classifier",
        help="train an image classifier from a folder with one sub-folder per class",
        description="Train a compact CNN image classifier (no downloaded weights) from DATA_DIR/<class>/*. "
        "Holds out a stratified validation split, calibrates probabilities (temperature scaling) and fits an "
        "out-of-distribution score; writes a model folder that --model PATH accepts.",
    )
    p.add_argument("data_dir", help="folder with one sub-folder of images per class")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--name", default=None, help="model name on the card (default: the --out folder name)")
    p.add_argument("--classes", default=None, help="comma-separated class folders to use (default: all)")
    p.add_argument("--arch", default="mscls-s", choices=list(CLASSIFIER_ARCHITECTURES),
                   help="network size (mscls-s reached 99.3%% on NEU in 13 min on 2 cores, see benchmarks/RESULTS.md)")
    p.add_argument("--channels", default="auto", choices=["auto", "grey", "rgb"],
                   help="network input: auto = RGB when any training image is colour with channels that differ, "
                   "else grey (default; recorded on the card)")
    p.add_argument("--input-size", type=int, default=128, help="images are resized to this square side")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of each class held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None, help="time budget: the warm-up + cosine schedule completes within it (epochs is then an upper bound)")
    p.add_argument("--balanced", action="store_true", help="sample classes equally often (imbalanced data)")
    p.add_argument("--no-augment", action="store_true", help="switch augmentations off")
    p.add_argument("--symmetry", default="d8", choices=["d8", "flips", "none"],
                   help="views that keep the class: d8 = flips and quarter turns (micrographs, default), "
                   "flips = mirror images only (surfaces with a direction), none")
    p.add_argument("--no-tta", action="store_true",
                   help="predict from the image as is, not averaged over its 8 flips / quarter turns")
    p.add_argument("--positive-class", default=None,
                   help="class that must not be missed (e.g. defective); with --target-recall")
    p.add_argument("--target-recall", type=float, default=None,
                   help="predict --positive-class whenever its probability reaches the threshold that gives this "
                   "recall on the validation images (stored in the card)")
    p.add_argument("--ood-percentile", type=float, default=95.0,
                   help="percentile of validation OOD scores used as the OOD threshold")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _progress(update: dict) -> None:
    stage = update.get("stage")
    if stage == "epoch":
        print(f"epoch {update['epoch']}/{update['epochs']}: loss {update['train_loss']:.4f}, "
              f"val accuracy {update['val_accuracy']:.4f}, {update['seconds']:.0f} s", file=sys.stderr, flush=True)
    elif stage == "split":
        print(f"{update['train']} training / {update['val']} validation images", file=sys.stderr, flush=True)
        for warning in update.get("warnings") or ():
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    elif stage == "calibration":
        for warning in update.get("warnings") or ():
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    elif stage == "time_limit":
        print(f"time limit reached after epoch {update['epoch']}", file=sys.stderr, flush=True)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse, before any image is read, options that would fail at the end or train nothing, naming the option."""
    import math

    from micro_seg.errors import TrainingDataError
    from micro_seg.registry import class_names_problem

    if args.epochs < 1:
        raise TrainingDataError(f"--epochs must be >= 1, got {args.epochs}")
    if args.input_size < 16:
        raise TrainingDataError(f"--input-size must be >= 16 pixels, got {args.input_size}")
    if args.batch_size < 2:  # batch norm skips batches of one image: nothing would be learned
        raise TrainingDataError(f"--batch-size {args.batch_size}: must be at least 2 (batch normalisation needs two "
                                "images per step)")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise TrainingDataError(f"--lr {args.lr}: must be a positive number")
    out, data = Path(args.out).expanduser().resolve(), Path(args.data_dir).expanduser().resolve()
    if out == data or data in out.parents:  # the model folder (or DATA/models holding it) would be read as a class
        # by the next training; inside a class folder it would be searched for that class's images
        raise TrainingDataError(f"{args.out}: --out is {'DATA_DIR' if out == data else 'a sub-folder of DATA_DIR'} "
                                f"{args.data_dir}, whose sub-folders are the classes; give the model a folder outside "
                                "it")
    if args.seed < 0:
        raise TrainingDataError(f"--seed {args.seed}: must be a whole number >= 0")
    if args.threads is not None and args.threads < 1:
        raise TrainingDataError(f"--threads {args.threads}: must be at least 1")
    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        raise TrainingDataError(f"--max-minutes {args.max_minutes}: must be a positive number of minutes")
    if args.positive_class is not None and args.target_recall is None:  # it would be ignored in silence
        raise TrainingDataError(f"--positive-class {args.positive_class}: needs --target-recall (the recall to reach "
                                "for it on the validation images); without it the class is not treated differently")
    if args.classes:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
        problem = class_names_problem(names)
        if problem:
            raise TrainingDataError(f"--classes {args.classes}: {problem}")
        nested = [c for c in names if "/" in c or "\\" in c or c in (".", "..")]
        if nested:
            raise TrainingDataError(f"--classes: {nested} are not sub-folder names of {args.data_dir}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and save; return the validation summary."""
    from micro_seg.classifier import ClassifierConfig, train_classifier
    from micro_seg.io import check_output_folder

    check_output_folder(args.out, "--out")
    _check_options(args)
    note_model_replaced(args.out)
    config = ClassifierConfig(
        arch=args.arch, in_channels={"auto": 0, "grey": 1, "rgb": 3}[args.channels], input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        val_fraction=args.val_fraction, seed=args.seed, max_minutes=args.max_minutes, balanced=args.balanced,
        augment=not args.no_augment, tta=not args.no_tta, symmetry=args.symmetry,
        positive_class=args.positive_class, target_recall=args.target_recall, ood_percentile=args.ood_percentile, threads=args.threads,
    )
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    result = train_classifier(args.data_dir, args.out, config=config, name=args.name, classes=classes,
                              progress=None if args.quiet else _progress)
    m = result.card.metrics
    return {
        "model_dir": str(result.folder),
        "name": result.card.name,
        "classes": result.card.classes,
        "channels": result.card.extra["channels"]["option"],
        "in_channels": result.card.in_channels,
        "val_accuracy": m["accuracy"],
        "n_val": m["n"],
        "validation_images": list(result.card.training_data.get("val_files") or []),
        "per_class": m["per_class"],
        "confusion_matrix": m["confusion_matrix"],
        "temperature": result.card.extra["temperature"],
        "ece_before_calibration": m["ece_before_calibration"],
        "ece_after_calibration": m["ece_after_calibration"],
        "ood_threshold": result.card.extra["ood"]["threshold"],
        "decision": result.card.extra.get("decision"),
        "epochs_run": m["epochs_run"],
        "seconds": m["train_seconds"],
        "sha256": result.card.weights_sha256,
        "warnings": list(m.get("warnings") or []),
    }
