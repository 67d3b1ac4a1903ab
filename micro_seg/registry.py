"""The one place that knows model cards, weights and architectures.

A **model folder** holds ``card.yaml`` (a :class:`ModelCard`) and
``model.safetensors`` (the network's ``state_dict``), optionally a
``README.md`` model card for humans and metrics files.  The card records the
sha256 of the weights; :func:`load_model` checks it *before* the weights are
parsed and refuses corrupt, truncated or tampered files with
:class:`~micro_seg.errors.WeightsIntegrityError`.  Nothing is ever unpickled
(no ``torch.load``) and nothing is downloaded.

Models are found by name in, in order:

1. the folders listed in the environment variable ``MICRO_SEG_MODELS``
   (``os.pathsep``-separated) -- user-trained models;
2. the user model folder :func:`user_models_dir`
   (``~/.local/share/micro-seg/models``, or ``$XDG_DATA_HOME/micro-seg/models``);
3. the models shipped with micro-seg, :func:`micro_seg.resources.models_dir`.

A path to a model folder (or to its ``card.yaml``) is accepted wherever a
name is.

Examples
--------
>>> import tempfile
>>> from micro_seg.nets import build_network
>>> from micro_seg.registry import ModelCard, save_model, load_model
>>> card = ModelCard(name="tiny", task="semantic", arch="msnet",
...                  arch_kwargs={"widths": [4, 8]}, in_channels=1,
...                  classes=["background", "pore"])
>>> net = build_network(card.arch, in_channels=1, num_classes=2, **card.arch_kwargs)
>>> folder = save_model(tempfile.mkdtemp() + "/tiny", net, card)
>>> loaded = load_model(folder)
>>> loaded.card.classes, loaded.network.training
(['background', 'pore'], False)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import yaml

from micro_seg._yaml import DuplicateKeyError, safe_load_unique
from micro_seg.errors import MicroSegError, ModelError, OutputPathError, WeightsIntegrityError

if TYPE_CHECKING:  # annotations only: numpy is imported where it is used
    import numpy as np

__all__ = [
    "ModelCard",
    "LoadedModel",
    "save_model",
    "load_model",
    "load_card",
    "combine_models",
    "list_models",
    "resolve_model",
    "model_search_dirs",
    "user_models_dir",
    "sha256_file",
    "write_safetensors",
    "CARD_FILE",
    "WEIGHTS_FILE",
]

CARD_FILE = "card.yaml"
WEIGHTS_FILE = "model.safetensors"
TASKS = ("semantic", "grains", "classification")
#: Smallest and largest ``input_scale`` a card (and training) accepts.
INPUT_SCALE_RANGE = (0.05, 4.0)
#: Post-processing options a card may set per task (see ModelCard.postprocess).
POSTPROCESS_OPTIONS = {"grains": {"threshold", "split_ratio", "min_grain_px", "smooth_sigma_px", "marker_threshold"},
                       "semantic": {"min_island_px", "min_area_px"}}


def check_postprocess_values(values: dict[str, Any], *, owner: str = "", names: dict[str, str] | None = None) -> None:
    """Refuse post-processing values out of range: every value a number >= 0, ``threshold`` in (0, 1).

    ``owner`` prefixes the message (``"model 'x'"``); ``names`` maps option
    keys to the names the user typed (``{"threshold": "--boundary-threshold"}``).

    Examples
    --------
    >>> check_postprocess_values({"threshold": 0.4, "split_ratio": 1.5})
    >>> check_postprocess_values({"threshold": 1.5}, names={"threshold": "--boundary-threshold"})
    Traceback (most recent call last):
    ...
    micro_seg.errors.ModelError: --boundary-threshold must be strictly between 0 and 1 (a boundary probability), got 1.5
    """
    names = names or {}
    prefix = f"{owner}: " if owner else ""
    for k, v in values.items():
        what = names.get(k, f"post-processing option {k}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v):
            raise ModelError(f"{prefix}{what} must be a finite number >= 0, got {v!r}")
        if k in ("threshold", "marker_threshold") and not 0 < v < 1:
            raise ModelError(f"{prefix}{what} must be strictly between 0 and 1 (a boundary probability), got {v!r}")


def class_names_problem(names: Sequence[str], *, in_file_names: bool = False) -> str | None:
    """Why ``names`` cannot be a model's class names, or None: a name given twice (a class map's values would be
    ambiguous, an instance file written for the wrong class); with ``in_file_names`` (defect classes, whose
    instances go to ``<stem>_<class>_instances.tif``) also a name unusable in a file name.

    >>> class_names_problem(["matrix", "alpha/beta"]) is None
    True
    >>> class_names_problem(["pore", "pore"])
    "['pore'] given more than once"
    >>> class_names_problem(["pore/void"], in_file_names=True)
    "['pore/void'] are not usable in file names: no empty names, '.', '..', slashes, colons or NUL"
    """
    names = [str(c) for c in names]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        return f"{dup} given more than once"
    if in_file_names:
        unsafe = [c for c in names if not c.strip() or c.strip() in (".", "..") or any(ch in c for ch in "/\\\0:")]
        if unsafe:
            return f"{unsafe} are not usable in file names: no empty names, '.', '..', slashes, colons or NUL"
    return None


@dataclass
class ModelCard:
    """Everything needed to rebuild, run and judge a model.

    Attributes
    ----------
    name : str
        Model name (also its folder name when shipped).
    task : {"semantic", "grains", "classification"}
        ``"grains"``: classes such as ``["grain", "boundary"]``, post-processed
        into grain instances; ``"semantic"``: one class per pixel (phases,
        defects); ``"classification"``: one class per image.
    arch, arch_kwargs : str, dict
        Architecture name and options for :func:`micro_seg.nets.build_network`.
    in_channels : int
        1 (grey) or 3 (RGB).
    classes : list of str
        Class names; index = class id = output channel.
    normalisation : dict
        See :mod:`micro_seg.preprocess`.
    pixel_size_um_range : tuple of float or None
        Pixel sizes seen in training (min, max), or None if unknown.
    tile_size : int
        Preferred inference tile side in pixels.
    input_scale : float
        The network sees micrographs resized by this factor (e.g. 0.5 for a
        model trained at half resolution, where the structures are large in
        pixels); inference resizes the image, runs the network and resamples
        the probabilities back to the image's own pixel grid. Default 1.
    postprocess : dict
        Default post-processing options for this model's output
        (:func:`micro_seg.postprocess.postprocess`), chosen on its training-side
        data: for grain models ``threshold``, ``split_ratio``, ``min_grain_px``,
        ``smooth_sigma_px``, ``marker_threshold``; for semantic models ``min_island_px``,
        ``min_area_px``.  Options given at run time win.
    material, description : str
        What the model is for.
    defect_classes : list of str
        Classes that are countable objects (pores, cracks, inclusions) and
        become instances in post-processing.
    training_data : dict
        ``{"description": ..., "sha256": <hash of the training file list>, ...}``;
        models from :func:`micro_seg.training.train_segmenter` add the image
        counts and, when it split the images itself, ``val_indices`` (the
        held-out images, as positions in the list it was given) with
        ``val_sha256`` (hash of those image/label pairs as given).
    metrics : dict
        Validation metrics (name -> value or dict), with the validation data named.
    weights_file, weights_sha256 : str
        File of the weights inside the folder and its sha256 (filled by
        :func:`save_model`).
    created, software_version : str
        ISO timestamp and micro-seg version that wrote the card.
    extra : dict
        Anything else (training settings, how to retrain, licences).
    """

    name: str
    task: str
    arch: str
    in_channels: int
    classes: list[str]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(
        default_factory=lambda: {"mode": "percentile", "low": 0.5, "high": 99.5}
    )
    pixel_size_um_range: tuple[float, float] | None = None
    tile_size: int = 512
    input_scale: float = 1.0
    postprocess: dict[str, Any] = field(default_factory=dict)
    material: str = ""
    description: str = ""
    defect_classes: list[str] = field(default_factory=list)
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str = ""
    created: str = ""
    software_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # value types first: a list or a mapping where text is expected failed later as an internal error
        # (unhashable list, 'int' object has no attribute 'lower', ...) instead of naming the card
        for key in ("name", "arch", "material", "description", "created", "software_version"):
            value = getattr(self, key)
            if value is None and key not in ("name", "arch"):
                value = ""
            if isinstance(value, (list, tuple, dict, set)) or value is None or isinstance(value, bool) \
                    or (key == "arch" and not isinstance(value, str)):
                raise ModelError(f"model {self.name!r}: {key} must be text, got {type(value).__name__} {value!r}")
            setattr(self, key, str(value))  # a number or a date YAML read from an unquoted value
        if self.weights_sha256 is None:
            self.weights_sha256 = ""
        if not isinstance(self.weights_sha256, str):
            raise ModelError(f"model {self.name!r}: weights_sha256 must be the weights' sha256 as text (64 hex "
                             f"digits), got {type(self.weights_sha256).__name__} {self.weights_sha256!r}")
        for key in ("arch_kwargs", "postprocess", "training_data", "metrics", "extra"):
            value = getattr(self, key)
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ModelError(f"model {self.name!r}: {key} must be a mapping (key: value lines), got "
                                 f"{type(value).__name__} {value!r}")
            setattr(self, key, value)
        if self.task not in TASKS:
            raise ModelError(f"model {self.name!r}: task {self.task!r} unknown; available: {', '.join(TASKS)}")
        for key in ("classes", "defect_classes"):  # a string would be split into its letters
            value = getattr(self, key)
            if value is not None and not isinstance(value, (list, tuple)):
                raise ModelError(f"model {self.name!r}: {key} must be a list of class names (one '- name' line "
                                 f"each, or [a, b]), got {type(value).__name__} {value!r}")
        if not self.classes:
            raise ModelError(f"model {self.name!r}: card lists no classes")
        self.classes = [str(c) for c in self.classes]
        self.defect_classes = [str(c) for c in (self.defect_classes or [])]
        for key in ("classes", "defect_classes"):
            problem = class_names_problem(getattr(self, key), in_file_names=key == "defect_classes")
            if problem:
                raise ModelError(f"model {self.name!r}: {key}: {problem}")
        if self.weights_file in (None, ""):  # not given: the default name, as save_model and loading read it
            self.weights_file = WEIGHTS_FILE
        if not isinstance(self.weights_file, str) or Path(self.weights_file).name != self.weights_file \
                or self.weights_file in (".", ".."):
            raise ModelError(f"model {self.name!r}: weights_file must be a file name inside the model folder, got "
                             f"{self.weights_file!r}")
        for key in ("in_channels", "tile_size"):
            value = getattr(self, key)
            whole = isinstance(value, numbers.Integral) or (isinstance(value, str) and value.strip().isdigit())
            if isinstance(value, bool) or not whole or int(value) < 1:
                raise ModelError(f"model {self.name!r}: {key} must be a positive whole number, got {value!r}")
            setattr(self, key, int(value))
        norm = {} if self.normalisation is None else self.normalisation
        mode = norm.get("mode", "percentile") if isinstance(norm, dict) else None
        from micro_seg.preprocess import NORMALISATION_MODES

        if mode not in NORMALISATION_MODES:
            raise ModelError(f"model {self.name!r}: normalisation {self.normalisation!r} unknown; modes: "
                             f"{', '.join(NORMALISATION_MODES)}")
        if mode == "percentile":  # checked here so that the message names the card, not only at the first image
            try:
                low, high = float(norm.get("low", 0.5)), float(norm.get("high", 99.5))
            except (TypeError, ValueError):
                raise ModelError(f"model {self.name!r}: normalisation low / high must be numbers, got "
                                 f"{norm.get('low')!r} / {norm.get('high')!r}") from None
            if not 0.0 <= low < high <= 100.0:
                raise ModelError(f"model {self.name!r}: percentile normalisation needs 0 <= low < high <= 100, "
                                 f"got low={low:g}, high={high:g}")
        try:
            self.input_scale = float(self.input_scale)
        except (TypeError, ValueError):
            raise ModelError(f"model {self.name!r}: input_scale must be a number, got {self.input_scale!r}") from None
        lo, hi = INPUT_SCALE_RANGE
        if not lo <= self.input_scale <= hi:
            raise ModelError(f"model {self.name!r}: input_scale {self.input_scale} is outside {lo:g}-{hi:g}")
        if self.pixel_size_um_range is not None:
            try:
                lo, hi = (float(v) for v in self.pixel_size_um_range)
            except (TypeError, ValueError):
                raise ModelError(f"model {self.name!r}: pixel_size_um_range must be two numbers [low, high] in "
                                 f"micrometres, got {self.pixel_size_um_range!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                raise ModelError(f"model {self.name!r}: pixel_size_um_range must be [low, high] with "
                                 f"0 < low <= high (micrometres), got {self.pixel_size_um_range!r}")
            self.pixel_size_um_range = (lo, hi)
        self.postprocess = dict(self.postprocess or {})
        allowed = POSTPROCESS_OPTIONS.get(self.task, set())
        bad = sorted(k for k in self.postprocess if k not in allowed)
        if bad:
            raise ModelError(f"model {self.name!r}: post-processing options {bad} do not apply to a {self.task} model "
                             f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
        check_postprocess_values(self.postprocess, owner=f"model {self.name!r}")
        marker = self.postprocess.get("marker_threshold")
        if marker is not None and marker >= self.postprocess.get("threshold", 0.5):
            raise ModelError(f"model {self.name!r}: post-processing marker_threshold {marker} must be below its "
                             f"threshold {self.postprocess.get('threshold', 0.5)} (at or above it, it does nothing)")
        unknown = [c for c in self.defect_classes if c not in self.classes]
        if unknown:
            raise ModelError(f"model {self.name!r}: defect_classes {unknown} are not among classes {self.classes}")
        if self.task == "grains":  # checked here, so that the message names the card, not only at the first image
            from micro_seg.postprocess import boundary_class_index

            try:
                boundary_class_index(self.classes)
            except ModelError as exc:
                raise ModelError(f"model {self.name!r}: {exc}") from None

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    @property
    def measures(self) -> list[str]:
        """The measurement groups a segmentation with this model gives (``grains``; ``phases`` and, with defect
        classes, ``defects``), as QC specs name them."""
        if self.task == "grains":
            return ["grains"]
        return ["phases"] + (["defects"] if self.defect_classes else [])

    def to_dict(self) -> dict[str, Any]:
        """Plain-data (YAML/JSON-safe) form of the card."""
        data = dataclasses.asdict(self)
        if self.pixel_size_um_range is not None:
            data["pixel_size_um_range"] = list(self.pixel_size_um_range)
        return _plain(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "card") -> "ModelCard":
        """Build a card from its dict form; unknown keys go to ``extra``."""
        if not isinstance(data, dict):
            raise ModelError(f"{source}: card is not a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("name", "task", "arch", "in_channels", "classes") if k not in data]
        if missing:
            raise ModelError(f"{source}: card lacks required keys {missing}")
        known = {k: v for k, v in data.items() if k in names}
        extra = known.pop("extra", None) or {}
        if not isinstance(extra, dict):
            raise ModelError(f"{source}: extra must be a mapping (key: value lines), got {type(extra).__name__} "
                             f"{extra!r}")
        extra = dict(extra)
        extra.update({k: v for k, v in data.items() if k not in names})
        try:
            return cls(**known, extra=extra)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise ModelError(f"{source}: {exc}") from exc
            raise ModelError(f"{source}: invalid card: {exc}") from exc


@dataclass
class LoadedModel:
    """A model ready to run: its card, the network in eval mode, its folder."""

    card: ModelCard
    network: Any
    folder: Path

    @property
    def name(self) -> str:
        """The card's model name."""
        return self.card.name


def _plain(obj: Any) -> Any:
    """Recursively convert tuples / numpy scalars / paths to YAML-safe types."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return obj


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x"); _ = open(p, "wb").write(b"abc")
    >>> sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def user_models_dir() -> Path:
    """Per-user folder for trained models (may not exist yet)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "micro-seg" / "models"


def model_search_dirs() -> list[Path]:
    """Folders searched for models by name, highest priority first."""
    from micro_seg.resources import models_dir

    dirs = [Path(p).expanduser() for p in os.environ.get("MICRO_SEG_MODELS", "").split(os.pathsep) if p.strip()]
    dirs += [user_models_dir(), models_dir()]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _model_folders(dirs: Iterable[Path]) -> list[Path]:
    found = []
    for d in dirs:
        if (d / CARD_FILE).is_file():
            found.append(d)
            continue
        if d.is_dir():
            found += sorted(p for p in d.iterdir() if (p / CARD_FILE).is_file())
    return found



def _one_line_yaml_error(exc: Exception) -> str:
    r"""A YAML parse error as one line: the problem and where (PyYAML's own text spans several lines).

    >>> import yaml
    >>> try:
    ...     yaml.safe_load("name: [unclosed\ntask: : :")
    ... except yaml.YAMLError as exc:
    ...     print(_one_line_yaml_error(exc))
    expected ',' or ']', but got ':' (line 2, column 5)
    """
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _state_dict_problem(exc: Exception) -> str:
    r"""The first concrete problem in torch's multi-line ``load_state_dict`` error, on one line.

    >>> print(_state_dict_problem(RuntimeError("Error(s) in loading state_dict for MSNet:\n\t"
    ...     "size mismatch for head.weight: copying a param with shape [4, 8, 1, 1] from checkpoint")))
    size mismatch for head.weight: copying a param with shape [4, 8, 1, 1] from checkpoint
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    details = [line for line in lines if not line.startswith("Error(s) in loading state_dict")]
    text = details[0] if details else (lines[0] if lines else type(exc).__name__)
    return text if len(text) <= 300 else text[:297] + "..."

def load_card(folder: str | os.PathLike) -> ModelCard:
    """Read ``card.yaml`` of a model folder.

    Raises
    ------
    ModelError
        The folder has no card or the card is malformed.
    """
    folder = Path(folder)
    path = folder / CARD_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise ModelError(f"{path}: no model card ({CARD_FILE}) found")
    try:
        data = safe_load_unique(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as exc:
        raise ModelError(f"{path}: model card: {exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: model card is not valid YAML: {_one_line_yaml_error(exc)}") from exc
    return ModelCard.from_dict(data, source=str(path))


def list_models(*extra_paths: str | os.PathLike, skipped: list | None = None,
                verify_weights: bool = False) -> list[ModelCard]:
    """Cards of every model found (user and shipped), plus ``extra_paths``.

    Each path in ``extra_paths`` may be a model folder or a folder of model
    folders.  A model name found in several places is listed once (the
    highest-priority one).  Malformed cards are skipped; pass a list as
    ``skipped`` to receive ``(folder, reason)`` for each folder left out
    (malformed, or hidden by a model of the same name listed before it).
    ``verify_weights``: also skip models whose weights file is missing or
    does not match the card's sha256 (``micro-seg models list``), so that a
    broken copy does not hide a working model of the same name.

    Examples
    --------
    >>> isinstance(list_models(), list)
    True
    """
    dirs = [Path(p) for p in extra_paths] + model_search_dirs()
    cards, seen = [], {}
    for folder in _model_folders(dirs):
        try:
            card = load_card(folder)
            if verify_weights and card.name not in seen:
                check_weights_file(folder, card)
        except ModelError as exc:
            if skipped is not None:
                skipped.append((str(folder), str(exc)))
            continue
        if card.name in seen:
            if skipped is not None and Path(seen[card.name]).resolve() != Path(folder).resolve():
                skipped.append((str(folder), f"model name {card.name!r} is already listed from {seen[card.name]}"))
            continue
        seen[card.name] = str(folder)
        card.extra.setdefault("folder", str(folder))
        cards.append(card)
    return cards


def _holds_weights(folder: Path) -> bool:
    """``folder`` holds safetensors weights, itself or in the ``checkpoint`` folder training keeps there."""
    try:
        return any(folder.glob("*.safetensors")) or any((folder / "checkpoint").glob("*.safetensors"))
    except OSError:
        return False


def resolve_model(name_or_path: str | os.PathLike, *, registered: bool = False) -> Path:
    """Folder of the model named ``name_or_path`` (or the folder given).

    ``registered=True``: a bare name means the model of that name in the model folders, never a folder of that name
    in the working directory (``train --out NAME --base NAME --resume``: ./NAME is the training's own output).

    Raises
    ------
    ModelError
        Unknown name (the message lists the available names) or a path
        without a card.

    Examples
    --------
    >>> try:
    ...     resolve_model("no-such-model")
    ... except ValueError as exc:
    ...     print(str(exc).split(";")[0])
    unknown model 'no-such-model'
    """
    if not isinstance(name_or_path, (str, os.PathLike)):  # None, a number: os.fspath's bare TypeError named neither
        raise ModelError(f"model {name_or_path!r}: not a model name or folder (a str or path; micro-seg models list "
                         "names them)")
    text = os.fsdecode(name_or_path)
    if not text.strip():
        raise ModelError("empty model name: give a model name (micro-seg models list) or a model folder")
    path = Path(text).expanduser()
    bare = not (os.sep in text or (os.altsep and os.altsep in text))
    local = not (registered and bare)  # what is in the working directory counts
    if local and path.is_file() and path.name == CARD_FILE:
        return path.parent
    no_card = local and path.is_dir() and not (path / CARD_FILE).is_file()
    if no_card and not bare:
        raise ModelError(f"{path}: folder has no model card ({CARD_FILE}); not a model folder")
    if no_card and _holds_weights(path):
        # a model of one's own without its card (a training still running or stopped, a card renamed): the
        # registered model of the same name would stand in for it without a word
        raise ModelError(f"{path}: folder holds model weights but no model card ({CARD_FILE}): an unfinished or "
                         "interrupted training? Not a model folder; for the registered model of that name, run from "
                         "another folder or give its folder (micro-seg models list)")
    if local and path.is_dir() and not no_card:
        return path
    if local and path.is_file():
        raise ModelError(f"{path}: is a file; --model takes a model name or a model folder (with {CARD_FILE})")
    if not bare:
        raise ModelError(f"{path}: model folder does not exist")
    # a bare name that is also a folder without a card here (an output folder named after the model,
    # `--out grain-boundaries`) is the model of that name, if there is one;
    # by card name in priority order, as `micro-seg models list` shows them: the first copy whose weights pass
    # their sha256 check (a broken copy does not hide a working one; with one copy, loading checks it anyway, so
    # it is not hashed twice); a folder name only if no card has the name
    folders = _model_folders(model_search_dirs())
    named = []
    for folder in folders:
        try:
            card = load_card(folder)
        except ModelError:
            continue
        if card.name == text:
            named.append((folder, card))
    for folder, card in (named if len(named) > 1 else ()):
        try:
            check_weights_file(folder, card)
        except ModelError:
            continue
        return folder
    if named:  # one copy, or every copy is broken: loading it says why
        return named[0][0]
    for folder in folders:
        if folder.name == text:
            return folder
    names = sorted({c.name for c in list_models()})
    listing = ", ".join(names) if names else "none installed"
    if no_card:  # a typo of a model name that an earlier --out made a folder of: the names say which was meant
        raise ModelError(f"{path}: folder has no model card ({CARD_FILE}); not a model folder, and no model has "
                         f"that name; available: {listing}")
    raise ModelError(f"unknown model {text!r}; available: {listing} (or give a model folder path)")


def write_safetensors(tensors: dict, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> torch tensor) to a safetensors file whose bytes depend only on the tensors and
    ``metadata``.

    safetensors writes the metadata keys in a random order (a hash map), so two saves of the same weights had
    two sha256; here the header is written again with its keys sorted.  The file is written under a temporary
    name and renamed over ``path``, so a reader never sees a half-written file.

    Examples
    --------
    >>> import tempfile, torch
    >>> a = write_safetensors({"w": torch.ones(2)}, tempfile.mkdtemp() + "/a.safetensors", metadata={"x": "1", "a": "2"})
    >>> b = write_safetensors({"w": torch.ones(2)}, tempfile.mkdtemp() + "/b.safetensors", metadata={"a": "2", "x": "1"})
    >>> sha256_file(a) == sha256_file(b)
    True
    """
    import json
    import struct

    from safetensors.torch import save

    path = Path(path)
    raw = save(tensors, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = dict(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])))  # data order
    if meta:
        ordered = {"__metadata__": dict(sorted(meta.items())), **ordered}
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(text)))
            fh.write(text)
            fh.write(memoryview(raw)[8 + n :])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, permissions: no half-written file left filling the disk
        tmp.unlink(missing_ok=True)
        raise _write_error(path, "weights", exc) from exc
    except BaseException:  # Ctrl-C, SIGTERM mid-write: neither
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_error(path: Path, what: str, exc: OSError) -> OutputPathError:
    """A failed write (disk full, permission denied, ...) as the one-line error that names the file."""
    return OutputPathError(f"{path}: cannot write {what} ({exc.strerror or exc})")


#: Sub-folder of a model folder where retraining keeps the model it replaced (``--model FOLDER/previous``).
PREVIOUS_DIR = "previous"


def keep_previous_model(folder: str | os.PathLike) -> Path | None:
    """Copy the model in ``folder`` (its card and the weights the card names) to ``folder/previous``, replacing an
    older copy there; ``None`` (nothing copied) when ``folder`` holds no model whose weights match its card.

    Retraining into a model's own folder replaces it; this keeps the one before, loadable as
    ``--model FOLDER/previous``. The copy is made in ``previous.tmp`` and switched in by renames, so an older
    copy is only given up for a complete new one.

    Raises
    ------
    OutputPathError
        The copy cannot be written (disk full, permissions); the model in ``folder`` is untouched.
    """
    import shutil

    folder = Path(folder)
    if not (folder / CARD_FILE).is_file():
        return None
    try:
        weights = check_weights_file(folder, load_card(folder))
    except MicroSegError:  # a half-written or edited model: nothing loadable to keep
        return None
    target, tmp, old = folder / PREVIOUS_DIR, folder / f"{PREVIOUS_DIR}.tmp", folder / f"{PREVIOUS_DIR}.old"
    try:
        for left in (tmp, old):
            shutil.rmtree(left, ignore_errors=True)
        tmp.mkdir()
        shutil.copy2(folder / CARD_FILE, tmp / CARD_FILE)
        shutil.copy2(weights, tmp / weights.name)
        for extra in ("metrics.json", "README.md"):  # the model's own metrics and human card, where it has them
            if (folder / extra).is_file():
                shutil.copy2(folder / extra, tmp / extra)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise OutputPathError(f"{target}: cannot keep a copy of the model being replaced ({exc.strerror or exc}); "
                              "the model in the folder is unchanged") from exc
    shutil.rmtree(old, ignore_errors=True)
    return target


def save_model(folder: str | os.PathLike, network: Any, card: ModelCard, *, keep_previous: bool = False) -> Path:
    """Write ``network`` weights (safetensors) and ``card`` (YAML) to ``folder``.

    Fills ``card.weights_sha256``, ``card.weights_file``, ``card.created`` (if
    empty) and ``card.software_version``. ``keep_previous``: a model already in
    ``folder`` is first copied to ``folder/previous`` (:func:`keep_previous_model`);
    training and the napari Train widget do this, so retraining never loses the
    model it replaces.

    Returns
    -------
    Path
        The model folder.
    """
    from micro_seg import __version__

    from micro_seg.nets import resolved_arch_kwargs

    # record the full architecture, so the model never depends on preset defaults
    card.arch_kwargs = resolved_arch_kwargs(card.arch, card.arch_kwargs)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if keep_previous:
        keep_previous_model(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    # safetensors refuses shared storage; clone tensors that alias each other
    seen: set[int] = set()
    for k, v in state.items():
        ptr = v.data_ptr()
        if v.numel() and ptr in seen:
            state[k] = v.clone()
        seen.add(ptr)
    card.weights_file = card.weights_file or WEIGHTS_FILE
    weights = folder / card.weights_file
    # a model already in the folder keeps working until the new one is complete: the new weights go to another
    # name, the card is switched to them in one step, then they take the usual name (a second switch), so an
    # interruption at any moment leaves the old model or the new one, each loadable. The other name carries the
    # weights' sha256, so it is never the file a card left by an interrupted save names (that save's weights
    # stay intact until the card is switched away from them)
    staging = write_safetensors(state, folder / f"{weights.stem}.staging{weights.suffix}",
                                metadata={"format": "pt", "name": card.name, "arch": card.arch})
    card.weights_sha256 = sha256_file(staging)
    staged = folder / f"{weights.stem}.{card.weights_sha256[:12]}{weights.suffix}"
    tmp = weights.with_name(weights.name + ".tmp")
    card.created = card.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    card.software_version = __version__
    # what a failed save removes: never the model the card names (staged may be the file an earlier, stopped save
    # of the same weights left the card naming)
    replacing, card_names_staged, staged_before = weights.exists(), False, staged.exists()
    try:
        os.replace(staging, staged)
        if replacing:
            _write_card(folder, {**card.to_dict(), "weights_file": staged.name})
            card_names_staged = True
            tmp.unlink(missing_ok=True)
            try:
                os.link(staged, tmp)
            except OSError:  # a file system without hard links
                import shutil

                shutil.copyfile(staged, tmp)
            os.replace(tmp, weights)
        else:
            os.replace(staged, weights)
        _write_card(folder, card.to_dict())
    except (OSError, OutputPathError) as exc:  # disk full, permissions: the model the card names, no other file
        for left in (staging, tmp, *(() if card_names_staged or staged_before else (staged,))):
            left.unlink(missing_ok=True)
        if not replacing and not (folder / CARD_FILE).exists():  # new weights that no card names
            weights.unlink(missing_ok=True)
        if isinstance(exc, OutputPathError):  # it names the file already
            raise
        raise _write_error(weights, "weights", exc) from exc
    _remove_staged_files(folder, weights)
    return folder


def _remove_staged_files(folder: Path, weights: Path) -> None:
    """Delete what this and earlier, interrupted saves of ``weights`` left in ``folder`` (staged weights,
    ``*.tmp`` files), once the card names ``weights`` again."""
    import re

    stem, suffix = re.escape(weights.stem), re.escape(weights.suffix)
    left = re.compile(rf"{stem}\.([0-9a-f]{{12}}|new|staging){suffix}(\.tmp)?|{re.escape(weights.name)}\.tmp|"
                      rf"{re.escape(CARD_FILE)}\.tmp")
    for path in folder.iterdir():
        if path.name != weights.name and left.fullmatch(path.name):
            path.unlink(missing_ok=True)


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``<name>.tmp`` and a rename, so a reader sees the old file or the new one
    (a card, a checkpoint record), never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # disk full, permissions: the old file stays, no partial one is left
        tmp.unlink(missing_ok=True)
        raise _write_error(path, "file", exc) from exc


def _write_card(folder: Path, data: dict[str, Any]) -> None:
    """Write ``card.yaml`` through a temporary file, so a reader sees the old card or the new one."""
    replace_text(folder / CARD_FILE, yaml.safe_dump(data, sort_keys=False))


def check_weights_file(folder: Path, card: ModelCard) -> Path:
    """The folder's weights file, after checking that it exists and that its sha256 is the card's.

    Raises
    ------
    WeightsIntegrityError
        Missing, unhashed on the card, or a sha256 other than the card's.
    """
    weights = Path(folder) / (card.weights_file or WEIGHTS_FILE)
    if not weights.is_file():
        raise WeightsIntegrityError(f"{weights}: weights file is missing")
    if not card.weights_sha256:
        raise WeightsIntegrityError(f"{weights}: card {Path(folder) / CARD_FILE} records no weights_sha256; "
                                    "refusing unverified weights")
    digest, expected = sha256_file(weights), str(card.weights_sha256).lower()
    if digest != expected:
        raise WeightsIntegrityError(
            f"{weights}: sha256 {digest[:16]}... does not match the card's {expected[:16]}...; "
            "the file is corrupt, truncated or was modified"
        )
    return weights


def _check_shapes_before_building(weights: Path, card: ModelCard, state: dict, build: Any, kwargs: dict) -> None:
    """Compare the card's architecture with the weights on torch's meta device (no memory) before building it
    for real: a card whose widths do not fit its weights (a hand edit, a hostile card asking for a network of
    terabytes) is refused with the first differing tensor instead of allocating it."""
    import torch

    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build(card.arch, **kwargs).state_dict().items()}
    except ModelError:
        raise
    except Exception:  # an architecture that cannot be built on the meta device: the real build checks it
        return
    got = {k: tuple(v.shape) for k, v in state.items()}
    differ = [k for k in shapes if k in got and shapes[k] != got[k]]
    n_card, n_weights = sum(math.prod(v) for v in shapes.values()), sum(math.prod(v) for v in got.values())
    if differ:  # missing / extra tensors alone are left to the real load (old ensembles lack their offsets)
        k = differ[0]
        detail = f"size mismatch for {k}: {list(got[k])} in the weights, {list(shapes[k])} for the card"
    elif n_card > 4 * n_weights + 1_000_000:
        detail = f"the card's network has {n_card} parameters, its weights {n_weights}"
    else:
        return
    raise ModelError(f"{weights}: weights do not fit architecture {card.arch!r} with the card's "
                     f"{card.num_classes} classes, {card.in_channels} input channel(s) and arch_kwargs: {detail}")


def load_verified_network(folder: Path, card: ModelCard, build: Any) -> Any:
    """Build ``build(card.arch, ...)`` and fill it with the folder's weights after the sha256 check.

    The one place that reads weights: the file's sha256 is compared with the
    card *before* it is parsed, and only safetensors is ever read.

    Raises
    ------
    WeightsIntegrityError
        Weights file missing, unhashed, truncated, corrupt or tampered.
    ModelError
        Weights that do not fit the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = check_weights_file(folder, card)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsIntegrityError(f"{weights}: cannot read safetensors weights: {exc}") from exc
    # weights with NaN / inf (a diverged run saved elsewhere, a bad export) would give all-background maps and
    # "0 % porosity" without a word; the sha256 only says the file is the one the card names
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise WeightsIntegrityError(f"{weights}: weights contain NaN or infinite values ({len(bad)} tensor(s), "
                                    f"e.g. {bad[0]!r}): the model cannot be used; retrain or re-export it")
    kwargs = dict(in_channels=card.in_channels, num_classes=card.num_classes, **card.arch_kwargs)
    _check_shapes_before_building(weights, card, state, build, kwargs)
    net = build(card.arch, **kwargs)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{weights}: weights do not fit architecture {card.arch!r} with the card's "
                         f"{card.num_classes} classes and {card.in_channels} input channel(s): "
                         f"{_state_dict_problem(exc)}") from exc
    net.eval()
    return net


def load_model(name_or_path: str | os.PathLike) -> LoadedModel:
    """Load a segmentation model by name or folder: card, verified weights, eval-mode network.

    The weights file's sha256 is compared with the card *before* it is parsed.
    Classification models are loaded with :func:`micro_seg.classifier.load_classifier`.

    Raises
    ------
    ModelError
        Unknown name, missing / malformed card, a classification model, or
        weights that do not fit the architecture.
    WeightsIntegrityError
        Weights file missing, truncated, corrupt or tampered (sha256 mismatch).
    """
    from micro_seg.nets import build_network

    folder = resolve_model(name_or_path)
    card = load_card(folder)
    if card.task == "classification":
        raise ModelError(f"{folder}: model {card.name!r} is an image classifier, not a segmentation model; "
                         "use it with `micro-seg classify` or in a QC spec")
    try:
        net = load_verified_network(folder, card, build_network)
    except ModelError as exc:
        if str(folder) in str(exc):
            raise
        raise type(exc)(f"{folder / CARD_FILE}: {exc}") from exc  # e.g. an unknown architecture: name the card
    return LoadedModel(card=card, network=net, folder=folder)


#: Card fields the members of an ensemble must share (they decide what the network sees and what its outputs mean).
_ENSEMBLE_SHARED = ("task", "classes", "in_channels", "normalisation", "input_scale", "defect_classes")


def combine_models(models: Iterable[str | os.PathLike | LoadedModel], folder: str | os.PathLike, *,
                   name: str | None = None, description: str | None = None,
                   calibrate_on: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None) -> Path:
    """Write one ensemble model from trained segmentation models (their probabilities are averaged).

    Each member's weights are sha256-checked on loading, as by
    :func:`load_model`.  The members must share task, classes, input
    channels, normalisation, input scale and defect classes (an ensemble of
    ensembles is flattened; the decision offsets of a calibrated one were
    chosen for its own average and are not carried over: without
    ``calibrate_on`` the card lists them under
    ``extra["offsets_not_carried"]``; an ensemble records no split of its
    own, so calibrate by joining the member models themselves).  The new
    card (``arch: ensemble``) keeps the first member's post-processing
    defaults, the largest tile size, the union of the training pixel-size
    ranges, and lists each member's name, weights sha256,
    training data and validation metrics under ``training_data["members"]``
    / ``metrics["members"]`` (lists, in member order).  Members trained on
    different splits of the same images each report their own validation
    figures; judge the ensemble on images none of them saw.

    The average of calibrated members is not calibrated: where two members
    disagree with certainty their mean is 0.5 and the tie goes to the first
    class.  ``calibrate_on`` chooses the ensemble's own per-class decision
    offsets (:func:`micro_seg.training.calibrate_logit_offsets`, maximising
    mean IoU; saved with the weights) on the validation images every member
    held out: members trained by :func:`~micro_seg.training.train_segmenter`
    with the same ``split_seed`` on the same pairs (``micro-seg train
    --split-seed``).  It takes those training pairs, in the order they were
    given (the CLI: sorted by file name); the held-out ones are checked
    against the members' ``val_sha256``, so the ensemble is never calibrated
    on images a member trained on.  The card's ``metrics["validation"]``
    then holds the ensemble's figures on them, before and after the offsets.

    Parameters
    ----------
    models : iterable of str, path or LoadedModel
        Two or more model names or folders.
    folder : str or path
        Model folder to write (``--model PATH`` accepts it everywhere).
    name, description : str, optional
        Card name (default the folder name) and description.
    calibrate_on : (images, labels), optional
        The members' training pairs (labels: 0 = unlabelled, ``c`` = class
        ``c``) to choose the decision offsets on their shared validation
        images.

    Returns
    -------
    Path
        The model folder.

    Raises
    ------
    ModelError
        Fewer than two members, a classification model, or members that
        differ in a shared field (the message names both models and the field);
        with ``calibrate_on``: members without a recorded validation split or
        with different ones, or pairs whose held-out images are not the ones
        the members held out.

    Examples
    --------
    >>> import tempfile
    >>> from micro_seg.nets import build_network
    >>> tmp = tempfile.mkdtemp()
    >>> for i in range(2):
    ...     card = ModelCard(name=f"m{i}", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]},
    ...                      in_channels=1, classes=["background", "pore"])
    ...     _ = save_model(f"{tmp}/m{i}", build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8]), card)
    >>> ens = load_model(combine_models([f"{tmp}/m0", f"{tmp}/m1"], f"{tmp}/both"))
    >>> ens.card.arch, [m["name"] for m in ens.card.training_data["members"]]
    ('ensemble', ['m0', 'm1'])
    """
    from micro_seg.nets import Ensemble

    loaded = [m if isinstance(m, LoadedModel) else load_model(m) for m in models]
    if len(loaded) < 2:
        raise ModelError(f"an ensemble needs at least two models, got {len(loaded)}")
    folder = Path(folder)
    for m in loaded:
        if m.folder is not None and folder.resolve() == Path(m.folder).resolve():
            raise ModelError(f"{folder}: --out is the folder of member {m.card.name!r}; write the ensemble elsewhere")
    if folder.exists() and not folder.is_dir():
        raise ModelError(f"{folder}: --out is an existing file, not a folder; give a new folder for the ensemble")
    if (folder / CARD_FILE).exists() or any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder}: --out already holds a model ({CARD_FILE} or weights); it is not replaced: give a "
                         "new folder for the ensemble, or remove that model first")
    seen: dict[Path, str] = {}
    for m in loaded:  # the same network twice is no ensemble: it only weights that member double
        if m.folder is None:
            continue
        key = Path(m.folder).resolve()
        if key in seen:
            raise ModelError(f"{m.folder}: given twice (also as {seen[key]!r}); an ensemble joins different models")
        seen[key] = m.card.name
    first = loaded[0]
    for m in loaded[1:]:
        for key in _ENSEMBLE_SHARED:
            a, b = getattr(first.card, key), getattr(m.card, key)
            if a != b:
                raise ModelError(f"{m.folder}: cannot join an ensemble with {first.folder}: {key} differs "
                                 f"({b!r} vs {a!r})")
    networks, member_arch, members, metrics, dropped, owners = [], [], [], [], [], []
    for m in loaded:
        owners += [str(m.folder or m.card.name)] * (len(m.network.members) if isinstance(m.network, Ensemble) else 1)
        if isinstance(m.network, Ensemble):  # flattened: its members join one by one
            networks += list(m.network.members)
            member_arch += m.card.arch_kwargs["members"]
            if bool(m.network.offsets.ne(0).any()):  # chosen for its own average, not for the new one
                dropped.append({"name": m.card.name, "logit_offsets": [float(o) for o in m.network.offsets]})
        else:
            networks.append(m.network)
            member_arch.append({"arch": m.card.arch, "arch_kwargs": dict(m.card.arch_kwargs)})
        members.append({"name": m.card.name, "folder": str(m.folder) if m.folder else None,
                        "weights_sha256": m.card.weights_sha256, "arch": m.card.arch,
                        "training_data": m.card.training_data})
        metrics.append({"name": m.card.name, **m.card.metrics})  # a list: members may share a name
    # the same network twice under two folders (a copy, one run twice with the same --seed, an ensemble and one of
    # its members) is no more an ensemble than one folder given twice
    first_with: dict[str, str] = {}
    for net, owner in zip(networks, owners):
        digest = _network_digest(net)
        if digest in first_with:
            same = "another of its networks" if first_with[digest] == owner else f"a network of {first_with[digest]}"
            raise ModelError(f"{owner}: holds a network with the same weights as {same}; an ensemble joins different "
                             "models (e.g. trained with different --seed): the same network twice only weights it "
                             "double")
        first_with[digest] = owner
    ranges = [m.card.pixel_size_um_range for m in loaded if m.card.pixel_size_um_range]
    card = ModelCard(
        name=name or folder.name, task=first.card.task, arch="ensemble", arch_kwargs={"members": member_arch},
        in_channels=first.card.in_channels, classes=list(first.card.classes),
        normalisation=dict(first.card.normalisation), input_scale=first.card.input_scale,
        pixel_size_um_range=(min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None,
        tile_size=max(m.card.tile_size for m in loaded), postprocess=dict(first.card.postprocess),
        material=first.card.material,
        description=description or (f"Ensemble of {len(networks)} networks ("
                                    + ", ".join(m.card.name for m in loaded) + "): class probabilities averaged."),
        defect_classes=list(first.card.defect_classes),
        training_data={"description": "the members' training data (see members)", "members": members},
        metrics={"members": metrics},
    )
    network = Ensemble(networks, num_classes=len(card.classes)).eval()
    if calibrate_on is not None:
        _calibrate_ensemble(network, card, loaded, calibrate_on)
    elif dropped:
        card.extra["offsets_not_carried"] = dropped
    return save_model(folder, network, card)


def _network_digest(network) -> str:
    """sha256 of a network's parameters and buffers (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for key, value in sorted(network.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _calibrate_ensemble(network, card: ModelCard, loaded: Sequence[LoadedModel], pairs) -> None:
    """Choose ``network.offsets`` on the validation images every member of ``loaded`` held out (see
    :func:`combine_models`) and record the ensemble's validation figures on ``card``."""
    import numpy as np
    import torch

    from micro_seg.inference import predict
    from micro_seg.training import calibrate_logit_offsets, offset_metrics, pairs_sha256

    images, labels = (list(p) for p in pairs)
    if len(images) != len(labels):
        raise ModelError(f"calibration: {len(images)} images but {len(labels)} label images")
    splits = []
    for m in loaded:
        data = m.card.training_data or {}
        if not data.get("val_indices") or not data.get("val_sha256"):
            raise ModelError(f"{m.folder or m.card.name}: the card records no validation images the model held out "
                             "(trained with val_fraction 0, with given validation images, by an older micro-seg, or "
                             "an ensemble): the ensemble cannot be calibrated on them")
        splits.append((tuple(int(i) for i in data["val_indices"]), data["val_sha256"]))
    if len(set(splits)) > 1:
        odd = next(m for m, split in zip(loaded, splits) if split != splits[0])
        raise ModelError(f"{odd.folder or odd.card.name}: held out other validation images than "
                         f"{loaded[0].folder or loaded[0].card.name}; train the members with the same --split-seed "
                         "(and the same images) to calibrate their ensemble")
    idx, sha = splits[0]
    if max(idx) >= len(images) or pairs_sha256([images[i] for i in idx], [labels[i] for i in idx]) != sha:
        raise ModelError(f"calibration: these {len(images)} image/label pairs are not the ones the members were "
                         "trained on (their held-out images differ from the recorded sha256): give the same folders, "
                         "label encoding and order")
    model = LoadedModel(card, network, None)
    tiny = np.finfo(np.float32).tiny
    logits = [np.log(np.maximum(predict(images[i], model, keep_uncertainty=False).probabilities, tiny)) for i in idx]
    truth = [np.asarray(labels[i]) for i in idx]
    offsets, _, _ = calibrate_logit_offsets(logits, truth, classes=card.classes)
    with torch.no_grad():
        network.offsets += torch.from_numpy(offsets).to(network.offsets.dtype)
    before = offset_metrics(logits, truth, np.zeros_like(offsets), card.classes)
    added = offsets
    if float(card.input_scale or 1.0) != 1.0 and np.any(offsets != 0):
        # the offsets act on the network's scale, before the probabilities are resampled to the image's pixels:
        # measure the ensemble as it is saved (as training does), not the resampled answer shifted afterwards
        logits = [np.log(np.maximum(predict(images[i], model, keep_uncertainty=False).probabilities, tiny))
                  for i in idx]
        added = np.zeros_like(offsets)
    card.metrics["validation"] = {
        "data": f"{len(idx)} validation images every member held out",
        **offset_metrics(logits, truth, added, card.classes),
        "note": "after per-class decision offsets chosen on these images",
        "before_offsets": {"iou": before["iou"], "mean_iou": before["mean_iou"]}}
    card.extra["calibration"] = {"logit_offsets": [float(o) for o in offsets], "val_indices": list(idx),
                                 "val_sha256": sha}
