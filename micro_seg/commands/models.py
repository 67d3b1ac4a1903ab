"""``micro-seg models list|show|ensemble``: the segmentation models micro-seg can use.

``models list`` prints every shipped and user model (``$MICRO_SEG_MODELS``,
``~/.local/share/micro-seg/models``, plus ``--path`` folders) with its task,
classes and weights sha256; ``models show NAME_OR_PATH`` prints one full
model card; ``models ensemble A B ... --out DIR`` joins trained models of the
same classes into one model whose class probabilities are their average
(:func:`micro_seg.registry.combine_models`), usable as ``--model DIR``
everywhere.

Examples
--------
>>> from micro_seg.cli import main
>>> main(["models", "list", "--json"])  # doctest: +SKIP
{"models": [{"name": "grain-boundaries", "task": "grains", ...}]}
0
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run_list", "run_show", "run_ensemble", "card_summary"]


def register(subparsers: Any) -> None:
    """Add ``models list`` / ``models show`` to the CLI."""
    parser = subparsers.add_parser(
        "models",
        help="list the segmentation models (shipped and user-trained) or show one model card",
        description="List the segmentation models micro-seg finds, or show one model card.",
    )
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(parser))
    ls = sub.add_parser("list", help="list models with task, classes and weights sha256")
    ls.add_argument("--path", action="append", default=[], metavar="DIR",
                    help="also list the model folder(s) in DIR (repeatable)")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(func=run_list)
    show = sub.add_parser("show", help="print one model card")
    show.add_argument("model", metavar="NAME_OR_PATH", help="model name or model folder")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=run_show)
    ens = sub.add_parser("ensemble", help="join trained models of the same classes into one (probabilities averaged)",
                         description="Join two or more trained segmentation models with the same classes, input "
                                     "channels, normalisation and input scale into one model folder whose class "
                                     "probabilities are the members' average (e.g. runs of `micro-seg train` with "
                                     "different --seed, trained side by side with --threads 1).")
    ens.add_argument("models", nargs="+", metavar="NAME_OR_PATH", help="member models (two or more)")
    ens.add_argument("--out", required=True, help="model folder to write")
    ens.add_argument("--name", default=None, help="model name on the card (default: the --out folder name)")
    ens.add_argument("--calibrate", nargs=2, metavar=("IMAGES_DIR", "LABELS_DIR"), default=None,
                     help="the folders the members were trained on (`micro-seg train` with the same --split-seed): "
                          "the ensemble's decision offsets are chosen on the validation images every member held "
                          "out (checked by sha256), as a single training run chooses its own")
    ens.add_argument("--label-encoding", default="sparse", choices=["sparse", "dense", "mask"],
                     help="label encoding of --calibrate's labels (as given to micro-seg train)")
    ens.add_argument("--json", action="store_true", help="print one JSON object")
    ens.set_defaults(func=run_ensemble)
    parser.set_defaults(func=_missing_action)


def _missing_action(args: argparse.Namespace) -> dict:
    from micro_seg.errors import MicroSegError

    raise MicroSegError("models: say what to do: list, show or ensemble (micro-seg models ACTION --help)")


def card_summary(card: Any) -> dict[str, Any]:
    """The ``models list`` entry of one :class:`~micro_seg.registry.ModelCard`."""
    return {
        "name": card.name,
        "task": card.task,
        "classes": list(card.classes),
        "sha256": card.weights_sha256,
        "arch": card.arch,
        "in_channels": card.in_channels,
        "material": card.material,
        "description": card.description,
        "pixel_size_um_range": list(card.pixel_size_um_range) if card.pixel_size_um_range else None,
        "defect_classes": list(card.defect_classes),
        "tile_size": card.tile_size,
        "metrics": card.metrics,
        "folder": card.extra.get("folder"),
    }


def run_list(args: argparse.Namespace) -> dict[str, Any]:
    """List models: ``{"models": [{"name", "task", "classes", "sha256", ...}]}``."""
    from pathlib import Path

    from micro_seg.errors import ModelError
    from micro_seg.registry import list_models

    for p in args.path:
        if not Path(p).is_dir():
            raise ModelError(f"{p}: --path is not a folder")
    skipped: list[tuple[str, str]] = []
    models = [card_summary(c) for c in list_models(*args.path, skipped=skipped, verify_weights=True)]
    for folder, reason in skipped:
        print(f"warning: {folder}: not listed: {reason}", file=sys.stderr)
    if getattr(args, "json", False):
        return {"models": models, "skipped": [{"folder": f, "reason": r} for f, r in skipped]}
    if not models:
        return {"models": "none found (shipped models live in models/, user models in ~/.local/share/micro-seg/models)"}
    return {m["name"]: f"{m['task']}: {', '.join(m['classes'])} ({m['arch']}, sha256 {m['sha256'][:12]}...) {m['folder'] or ''}"
            for m in models}


def run_show(args: argparse.Namespace) -> dict[str, Any]:
    """Print the full card of one model (after resolving its name), and whether its weights pass the sha256 check."""
    from micro_seg.errors import WeightsIntegrityError
    from micro_seg.registry import check_weights_file, load_card, resolve_model

    folder = resolve_model(args.model)
    card = load_card(folder)
    data = card.to_dict()
    data["folder"] = str(folder)
    try:
        check_weights_file(folder, card)
        data["weights_check"] = "ok: sha256 matches the card"
    except WeightsIntegrityError as exc:
        data["weights_check"] = f"FAILED: {exc}"
        print(f"warning: {exc}", file=sys.stderr)
    return data


def run_ensemble(args: argparse.Namespace) -> dict[str, Any]:
    """Write an ensemble model: ``{"model": folder, "name", "members": [...], "networks", "sha256"}``."""
    from micro_seg.registry import combine_models, load_card

    pairs = None
    if args.calibrate:
        from micro_seg.commands.train import load_pairs

        _, images, labels = load_pairs(*args.calibrate, args.label_encoding)
        pairs = (images, labels)
    folder = combine_models(args.models, args.out, name=args.name, calibrate_on=pairs)
    card = load_card(folder)
    out = {"model": str(folder), "name": card.name, "members": [m["name"] for m in card.training_data["members"]],
           "networks": len(card.arch_kwargs["members"]), "classes": list(card.classes), "sha256": card.weights_sha256}
    for d in card.extra.get("offsets_not_carried") or ():
        print(f"warning: {d['name']}'s decision offsets {d['logit_offsets']} were chosen for its own average and do "
              "not carry over to this ensemble; to calibrate it, join the member models themselves with --calibrate",
              file=sys.stderr)
    if "calibration" in card.extra:
        val = card.metrics["validation"]
        out["calibration"] = {"logit_offsets": card.extra["calibration"]["logit_offsets"], "data": val["data"],
                              "mean_iou_before": val["before_offsets"]["mean_iou"], "mean_iou": val["mean_iou"]}
    return out
