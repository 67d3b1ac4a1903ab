"""Quality-control specifications and pass / review / fail verdicts.

A **QC spec** is a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file per
material or product.  Every section is optional, but a spec file must check
something (an empty one is refused: it would pass every image)::

    name: "S355 plate, grain size 7-9"
    version: 1
    image:                          # image-quality checks (default severity: review)
      blur: {max: 0.45}             # blur effect, 0 sharp .. 1 blurred
      clipped_low_fraction: {max: 0.01}
      clipped_high_fraction: {max: 0.01}
      dynamic_range: {min: 0.10}    # fraction of the grey scale used (p1..p99)
      calibration: required         # missing pixel size -> review ("fail" to fail)
      pixel_size_um: [0.1, 1.0]     # magnification window, as a pixel size
      magnification: [100, 1000]    # only where the file records it
      out_of_distribution: review   # the model says the image is unfamiliar
    measurements:                   # keys as in `micro-seg analyze` (default: fail)
      grains:
        G_intercept: {min: 7.0, max: 9.0, margin: 0.2}
        ala_G: {min: 4.0}
      phases:
        phase_fractions:
          ferrite: [0.6, 0.9]
      defects:                      # every defect class of the model together
        area_fraction: {max: 0.005}
        max_feret_um: {max: 50}
        density_per_mm2: {max: 100}
        by_class:                   # one defect class of the model alone (keys: PER_CLASS_DEFECT_KEYS)
          pore: {area_fraction: {max: 0.002}}
    classifier:
      forbidden_classes: [scratches]      # -> fail
      review_classes: [patches]           # -> review
      min_confidence: 0.8                 # -> review

A **range rule** is ``[min, max]`` (``null`` for an open end), a single number
for keys whose rule is one-sided (``blur``, ``clipped_*`` -> max;
``dynamic_range`` -> min) or a mapping ``{min, max, severity, margin}``.
``margin`` turns a value up to ``margin`` beyond a limit into *review* rather
than *fail* (measurement uncertainty).  A measurement the spec asks for but
that was not measured gives *review* (``value: null``); a key that no
measurement produces (a typo) is refused when the spec is read.

The verdict is *fail* if any reason has severity fail, else *review* if any
reason exists, else *pass*.  Every reason is ``{"check", "value", "limit",
"bound", "severity", "message"}`` where ``limit`` is the violated limit.

Examples
--------
>>> from micro_seg.qc import parse_spec, evaluate
>>> spec = parse_spec({"measurements": {"grains": {"G_intercept": [7, 9]}}})
>>> r = evaluate(None, spec, measurements={"grains": {"G_intercept": 6.5}})
>>> r.verdict, r.reasons[0].check, r.reasons[0].limit
('fail', 'grains.G_intercept', 7.0)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from micro_seg._yaml import DuplicateKeyError, safe_load_unique
from micro_seg.errors import InputFileNotFoundError, SpecError

__all__ = [
    "QCSpec",
    "QCResult",
    "Reason",
    "RangeRule",
    "load_spec",
    "parse_spec",
    "evaluate",
    "evaluate_specimen",
    "combine_verdicts",
    "offending_defects",
    "VERDICTS",
    "SEVERITIES",
    "pixel_quality",
]

VERDICTS = ("pass", "review", "fail")
SEVERITIES = ("review", "fail")
_TOP_KEYS = {"name", "version", "description", "material", "image", "measurements", "classifier"}
_IMAGE_ONE_SIDED = {
    "blur": "max",
    "clipped_low_fraction": "max",
    "clipped_high_fraction": "max",
    "dynamic_range": "min",
    "laplacian_sharpness": "min",
}
_IMAGE_RANGES = {"pixel_size_um", "magnification"}
#: Pixel checks measured against the image's grey scale (not measured when it is unknown).
_SCALE_KEYS = {"clipped_low_fraction", "clipped_high_fraction", "dynamic_range"}
_IMAGE_ACTIONS = {"calibration": ("required", "review", "fail", "optional", "ignore"),
                  "out_of_distribution": ("review", "fail", "ignore")}
_MEASUREMENT_GROUPS = ("grains", "phases", "defects")
#: Measurement keys a spec may name per group: the scalar keys of ``measure_grains`` /
#: ``measure_phases`` / ``measure_defects`` summaries (as printed by ``micro-seg analyze``).
#: ``tests/test_qc_input.py`` checks that every key the measurements produce is listed.
_MEASUREMENT_KEYS = {
    "grains": frozenset({
        "n_grains", "grains_per_mm2", "G_planimetric", "mean_intercept_um", "G_intercept", "G_intercept_ci95",
        "mean_area_um2", "G_area", "ala_G", "pixel_size_um", "jeffries_count", "n_grains_inside", "n_grains_edge",
        "n_grains_corner", "grains_per_px2", "G_planimetric_ci95", "mean_intercept_px", "mean_intercept_ci95_um",
        "mean_intercept_ci95_px", "mean_intercept_ra_percent", "n_intersections", "test_line_length_um",
        "test_line_length_px", "mean_intercept_circles_um", "mean_intercept_circles_px", "G_intercept_circles",
        "n_intersections_circles", "mean_area_px2", "mean_area_planimetric_um2", "ala_area_um2", "ala_area_px2",
        "ala_label", "mean_neighbors", "sd_neighbors", "n_boundaries", "mean_ecd_um", "mean_ecd_px",
    }),
    "phases": frozenset({"phase_fractions", "analysed_area_px", "analysed_area_um2", "n_fields", "pixel_size_um"}),
    "defects": frozenset({
        "count", "area_fraction", "density_per_mm2", "mean_ecd_um", "max_feret_um", "mean_feret_max_um",
        "mean_feret_min_um", "mean_area_um2", "max_area_um2", "mean_nn_distance_um", "mean_free_path_um",
        "pixel_size_um", "density_per_px2", "mean_ecd_px", "max_feret_px", "mean_area_px", "mean_nn_distance_px",
        "mean_free_path_px", "mean_aspect_ratio", "mean_circularity", "mean_solidity", "n_touching_edge", "edge_weighted_count",
        "area_fraction_ci95", "density_ci95_per_mm2",
        "max_ecd_um", "max_ecd_px", "n_removed_small", "removed_area_fraction",
    }),
}
#: Keys a spec may judge for one defect class (``measurements.defects.by_class.<class>.<key>``): the headline
#: numbers ``micro-seg batch`` also writes per class to images.csv (``defects_<class>_<key>``).
PER_CLASS_DEFECT_KEYS = ("count", "area_fraction", "density_per_mm2", "mean_ecd_um", "max_ecd_um", "max_feret_um",
                         "max_area_um2")
#: Spec group of the rules for one defect class: ``defects.by_class.<class>``.
_BY_CLASS = "defects.by_class."
#: Batch-table columns ``<prefix><name>`` whose name part is free-form (a phase name, an angle).
_MEASUREMENT_PREFIXES = {
    "grains": ("mean_intercept_by_angle_px_",),
    "phases": ("phase_fraction_", "phase_fraction_ci95_", "phase_fraction_ra_percent_", "phase_area_um2_"),
    "defects": (),
}
#: The batch-table column prefixes (``_MEASUREMENT_PREFIXES``) and the part of the nested summary (``micro-seg
#: analyze``, ``qc --model``, the batch's own QC) that holds their values by name (a phase, an angle).
_NESTED_PARTS = {
    "grains": {"mean_intercept_by_angle_px_": "mean_intercept_by_angle_px"},
    "phases": {"phase_fraction_": "phase_fractions", "phase_fraction_ci95_": "ci95",
               "phase_fraction_ra_percent_": "ra_percent", "phase_area_um2_": "area_um2"},
}
_CLASSIFIER_KEYS = {"forbidden_classes", "review_classes", "allowed_classes", "min_confidence", "model"}


# --------------------------------------------------------------------------- spec


def measured_groups(spec: "QCSpec") -> list[str]:
    """The measurement groups (``grains``, ``phases``, ``defects``) whose rules ``spec`` has, in spec order.

    >>> measured_groups(parse_spec({"measurements": {"defects": {"count": {"max": 3}}}}))
    ['defects']
    """
    needed = list(dict.fromkeys("defects" if g.startswith(_BY_CLASS) else g
                                for g, rules in spec.measurements.items() if rules))
    if spec.phase_fractions and "phases" not in needed:
        needed.append("phases")
    return needed


def check_model_measures(spec: "QCSpec", card: Any) -> None:
    """Refuse a spec whose measurement rules the model of ``card`` cannot measure (``card.measures``): every image
    would otherwise come out "review" for a measurement that never existed.  ``micro-seg qc --model`` and
    ``micro-seg batch --spec`` check this before any image.

    >>> from types import SimpleNamespace
    >>> card = SimpleNamespace(name="g", task="grains", measures=["grains"])
    >>> check_model_measures(parse_spec({"measurements": {"defects": {"count": {"max": 3}}}}, source="s.yaml"), card)
    Traceback (most recent call last):
    ...
    micro_seg.errors.SpecError: s.yaml: the spec has rules for measurements.defects, but model 'g' (grains) measures only grains; give a model that measures defects
    """
    missing = [g for g in measured_groups(spec) if g not in card.measures]
    if missing:
        raise SpecError(f"{spec.source}: the spec has rules for {' and '.join(f'measurements.{g}' for g in missing)}, "
                        f"but model {card.name!r} ({card.task}) measures only {', '.join(card.measures)}; give a "
                        f"model that measures {', '.join(missing)}")
    classes = list(getattr(card, "defect_classes", None) or [])
    unknown = [g.removeprefix(_BY_CLASS) for g, rules in spec.measurements.items()
               if rules and g.startswith(_BY_CLASS) and g.removeprefix(_BY_CLASS) not in classes]
    if unknown:
        raise SpecError(f"{spec.source}: measurements.defects.by_class.{unknown[0]}: model {card.name!r} has no "
                        f"defect class {unknown[0]!r}; its defect classes are: {', '.join(classes)}")
    phases = list(getattr(card, "classes", None) or [])  # a phase model's fractions are named by its classes
    if phases and "phases" in card.measures:
        unknown_phase = first_unknown_phase(spec, phases)
        if unknown_phase:
            where, phase = unknown_phase
            raise SpecError(f"{spec.source}: {where}: model {card.name!r} has no class {phase!r}; its classes "
                            f"are: {', '.join(phases)}")


def first_unknown_phase(spec: "QCSpec", classes: Any = None) -> tuple[str, str] | None:
    """``(where, phase)`` of the first phase a spec's rules name that the measurement has no fraction for, or None:
    a phase not among ``classes`` (the class names the phases are measured with), or, with ``classes`` None
    (fractions named by class value, as ``measure_phases`` without names gives them), a phase that is not a class
    value.  Every image would otherwise come out "review" for that rule ("was not measured").

    >>> spec = parse_spec({"measurements": {"phases": {"phase_fractions": {"ferrite": [0.5, 1]}}}})
    >>> first_unknown_phase(spec, ["ferrite", "pearlite"]) is None, first_unknown_phase(spec)
    (True, ('measurements.phases.phase_fractions.ferrite', 'ferrite'))
    """
    names = None if classes is None else {str(c) for c in classes}
    return next(((where, phase) for where, phase in _phase_names(spec)
                 if (phase not in names if names is not None else not phase.isdigit())), None)


def _phase_names(spec: "QCSpec"):
    """``(where, phase name)`` of every phase a spec's rules name: ``phases.phase_fractions.<phase>`` and the batch
    columns ``phases.phase_fraction_<phase>`` (``_ci95_``, ``_ra_percent_``, ``phase_area_um2_``).

    >>> list(_phase_names(parse_spec({"measurements": {"phases": {"phase_fractions": {"a": [0, 1]},
    ...                                                           "phase_fraction_ci95_b": {"max": 0.1}}}})))
    [('measurements.phases.phase_fractions.a', 'a'), ('measurements.phases.phase_fraction_ci95_b', 'b')]
    """
    for phase in spec.phase_fractions:
        yield f"measurements.phases.phase_fractions.{phase}", phase
    prefixes = sorted(_MEASUREMENT_PREFIXES["phases"], key=len, reverse=True)  # the longest prefix names the phase
    for key in spec.measurements.get("phases", {}):
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is not None:
            yield f"measurements.phases.{key}", key[len(prefix):]


#: Relative tolerance of the margin comparison (float rounding of ``limit - value``).
_MARGIN_RTOL = 1e-9


@dataclass(frozen=True)
class RangeRule:
    """Acceptance range of one quantity.

    Examples
    --------
    >>> RangeRule(min=1.0, max=2.0, margin=0.1).judge(2.05)
    ('review', 'max', 2.0)
    >>> RangeRule(min=1.0).judge(3.0) is None
    True
    >>> RangeRule(min=7, max=10, margin=0.2).judge(6.8), RangeRule(min=7, max=10, margin=0.2).judge(10.2)
    (('review', 'min', 7.0), ('review', 'max', 10.0))
    """

    min: float | None = None
    max: float | None = None
    severity: str = "fail"
    margin: float = 0.0

    def judge(self, value: float) -> tuple[str, str, float] | None:
        """``(severity, bound, limit)`` when ``value`` is outside, else None."""
        for bound, limit, excess in (
            ("min", self.min, None if self.min is None else self.min - value),
            ("max", self.max, None if self.max is None else value - self.max),
        ):
            if limit is not None and excess is not None and excess > 0:
                # ``limit - value`` rounds differently on each side (7 - 6.8 > 0.2 but 10.2 - 10 < 0.2): a value
                # on the margin, to within the rounding of its digits, is within it on both sides
                tol = _MARGIN_RTOL * max(1.0, abs(float(limit)), abs(float(value)))
                severity = "review" if (self.margin > 0 and excess <= self.margin + tol) else self.severity
                return severity, bound, float(limit)
        return None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class QCSpec:
    """A validated QC specification (see the module docstring for the format)."""

    name: str = ""
    source: str = "<spec>"
    image: dict[str, RangeRule] = field(default_factory=dict)
    calibration: str = "ignore"
    out_of_distribution: str = "ignore"
    measurements: dict[str, dict[str, RangeRule]] = field(default_factory=dict)
    phase_fractions: dict[str, RangeRule] = field(default_factory=dict)
    forbidden_classes: tuple[str, ...] = ()
    review_classes: tuple[str, ...] = ()
    allowed_classes: tuple[str, ...] | None = None
    min_confidence: RangeRule | None = None
    classifier_model: str | None = None

    @property
    def needs_measurements(self) -> bool:
        """True if the spec has measurement rules."""
        return bool(self.phase_fractions) or any(self.measurements.values())

    @property
    def needs_classifier(self) -> bool:
        """True if the spec has classifier rules."""
        return bool(self.forbidden_classes or self.review_classes or self.allowed_classes is not None
                    or self.min_confidence is not None)

    @property
    def has_checks(self) -> bool:
        """True if the spec checks anything at all (an empty spec would pass every image)."""
        return bool(self.image or self.calibration != "ignore" or self.out_of_distribution != "ignore"
                    or self.needs_measurements or self.needs_classifier)


def _number(value: Any, key: str, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{source}: {key}: expected a number or null, got {value!r}")
    if not math.isfinite(float(value)):
        raise SpecError(f"{source}: {key}: expected a finite number, got {value!r}")
    return float(value)


def _severity(value: Any, key: str, source: str) -> str:
    if value not in SEVERITIES:
        raise SpecError(f"{source}: {key}: severity must be one of {', '.join(SEVERITIES)}, got {value!r}")
    return str(value)


def _range_rule(value: Any, key: str, source: str, *, default_severity: str, one_sided: str | None = None) -> RangeRule:
    """Parse ``[min, max]``, a number (one-sided keys) or a mapping."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(f"{source}: {key}: expected [min, max], got {list(value)!r}")
        lo, hi = _number(value[0], f"{key}[0]", source), _number(value[1], f"{key}[1]", source)
        rule = RangeRule(min=lo, max=hi, severity=default_severity)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if one_sided is None:
            raise SpecError(f"{source}: {key}: a single number is ambiguous here; write [min, max] or {{min: ..., max: ...}}")
        num = _number(value, key, source)
        rule = RangeRule(**{one_sided: num}, severity=default_severity)
    elif isinstance(value, Mapping):
        unknown = set(value) - {"min", "max", "severity", "margin"}
        if unknown:
            raise SpecError(f"{source}: {key}: unknown keys {sorted(unknown)}; allowed: min, max, severity, margin")
        margin = _number(value.get("margin", 0.0), f"{key}.margin", source) or 0.0
        if margin < 0:
            raise SpecError(f"{source}: {key}.margin: must be >= 0, got {margin}")
        rule = RangeRule(
            min=_number(value.get("min"), f"{key}.min", source),
            max=_number(value.get("max"), f"{key}.max", source),
            severity=_severity(value.get("severity", default_severity), f"{key}.severity", source),
            margin=margin,
        )
    else:
        raise SpecError(f"{source}: {key}: expected [min, max] or a mapping with min/max, got {value!r}")
    if rule.min is None and rule.max is None:
        raise SpecError(f"{source}: {key}: rule sets neither min nor max")
    if rule.min is not None and rule.max is not None and rule.min > rule.max:
        raise SpecError(f"{source}: {key}: min {rule.min} is greater than max {rule.max}")
    return rule


def _mapping(value: Any, key: str, source: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{source}: {key}: expected a mapping (key: value lines), got {type(value).__name__}")
    return value


def _class_list(value: Any, key: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int)) for v in value):
        raise SpecError(f"{source}: {key}: expected a list of class names, got {value!r}")
    return tuple(str(v) for v in value)


def parse_spec(data: Any, *, source: str = "<spec>") -> QCSpec:
    """Validate a spec given as a dict (e.g. parsed YAML).

    Raises
    ------
    SpecError
        The message names the source and the offending key.

    Examples
    --------
    >>> parse_spec({"image": {"blur": 0.5}}).image["blur"].max
    0.5
    >>> try:
    ...     parse_spec({"image": {"blurr": 0.5}}, source="s.yaml")
    ... except ValueError as exc:
    ...     print(str(exc)[:30])
    s.yaml: image.blurr: unknown c
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    unknown = set(map(str, data)) - _TOP_KEYS
    if unknown:
        raise SpecError(f"{source}: {sorted(unknown)[0]}: unknown section; allowed: {', '.join(sorted(_TOP_KEYS))}")
    version = data.get("version", 1)
    if version != 1:
        raise SpecError(f"{source}: version: only version 1 is supported, got {version!r}")
    name = data.get("name", "")
    if not isinstance(name, str):
        raise SpecError(f"{source}: name: expected text, got {name!r}")

    image_rules: dict[str, RangeRule] = {}
    calibration, ood = "ignore", "ignore"
    for key, value in _mapping(data.get("image"), "image", source).items():
        where = f"image.{key}"
        if key in _IMAGE_ONE_SIDED:
            image_rules[key] = _range_rule(value, where, source, default_severity="review", one_sided=_IMAGE_ONE_SIDED[key])
        elif key in _IMAGE_RANGES:
            image_rules[key] = _range_rule(value, where, source, default_severity="review")
        elif key in _IMAGE_ACTIONS:
            if isinstance(value, bool):
                value = ("required" if key == "calibration" else "review") if value else "ignore"
            if value not in _IMAGE_ACTIONS[key]:
                raise SpecError(f"{source}: {where}: expected one of {', '.join(_IMAGE_ACTIONS[key])}, got {value!r}")
            if key == "calibration":
                calibration = {"required": "review", "optional": "ignore"}.get(value, value)
            else:
                ood = value
        else:
            allowed = sorted(set(_IMAGE_ONE_SIDED) | _IMAGE_RANGES | set(_IMAGE_ACTIONS))
            raise SpecError(f"{source}: {where}: unknown check; allowed: {', '.join(allowed)}")

    measurements: dict[str, dict[str, RangeRule]] = {}
    phase_fractions: dict[str, RangeRule] = {}
    for group, rules in _mapping(data.get("measurements"), "measurements", source).items():
        if group not in _MEASUREMENT_GROUPS:
            raise SpecError(f"{source}: measurements.{group}: unknown group; allowed: {', '.join(_MEASUREMENT_GROUPS)}")
        parsed: dict[str, RangeRule] = {}
        for key, value in _mapping(rules, f"measurements.{group}", source).items():
            where = f"measurements.{group}.{key}"
            if group == "phases" and key == "phase_fractions":
                for phase, prule in _mapping(value, where, source).items():
                    phase_fractions[str(phase)] = _range_rule(prule, f"{where}.{phase}", source, default_severity="fail")
                    _check_fraction(phase_fractions[str(phase)], f"{where}.{phase}", source)
                continue
            if group == "defects" and key == "by_class":
                for cls, crules in _mapping(value, where, source).items():
                    per_class: dict[str, RangeRule] = {}
                    for ckey, cvalue in _mapping(crules, f"{where}.{cls}", source).items():
                        cwhere = f"{where}.{cls}.{ckey}"
                        if ckey not in PER_CLASS_DEFECT_KEYS:
                            raise SpecError(f"{source}: {cwhere}: not judged per defect class; allowed: "
                                            f"{', '.join(PER_CLASS_DEFECT_KEYS)} (every other key under "
                                            "measurements.defects judges all classes together)")
                        per_class[str(ckey)] = _range_rule(cvalue, cwhere, source, default_severity="fail",
                                                           one_sided=_one_sided(str(ckey)))
                    measurements[_BY_CLASS + str(cls)] = per_class
                continue
            _check_measurement_key(group, str(key), where, source)
            one_sided = _one_sided(str(key))
            parsed[str(key)] = _range_rule(value, where, source, default_severity="fail", one_sided=one_sided)
        measurements[str(group)] = parsed

    cls = _mapping(data.get("classifier"), "classifier", source)
    unknown = set(cls) - _CLASSIFIER_KEYS
    if unknown:
        raise SpecError(f"{source}: classifier.{sorted(unknown)[0]}: unknown key; allowed: {', '.join(sorted(_CLASSIFIER_KEYS))}")
    min_conf = None
    if cls.get("min_confidence") is not None:
        min_conf = _range_rule(cls["min_confidence"], "classifier.min_confidence", source, default_severity="review", one_sided="min")
        if min_conf.max is not None or not (0.0 <= (min_conf.min or 0.0) <= 1.0):
            raise SpecError(f"{source}: classifier.min_confidence: expected a probability in [0, 1], got {cls['min_confidence']!r}")
    model = cls.get("model")
    if model is not None and not isinstance(model, str):
        raise SpecError(f"{source}: classifier.model: expected a model name or folder, got {model!r}")
    allowed_classes = cls.get("allowed_classes")
    if allowed_classes is not None and not _class_list(allowed_classes, "classifier.allowed_classes", source):
        raise SpecError(f"{source}: classifier.allowed_classes: an empty list allows no class, so every image would "
                        "fail; name the allowed classes, or leave the key out to allow every class")
    forbidden = _class_list(cls.get("forbidden_classes"), "classifier.forbidden_classes", source)
    review = _class_list(cls.get("review_classes"), "classifier.review_classes", source)
    both = set(forbidden) & set(review)
    if both:
        raise SpecError(f"{source}: classifier.review_classes: {sorted(both)} are also forbidden_classes")
    return QCSpec(
        name=name,
        source=source,
        image=image_rules,
        calibration=calibration,
        out_of_distribution=ood,
        measurements=measurements,
        phase_fractions=phase_fractions,
        forbidden_classes=forbidden,
        review_classes=review,
        allowed_classes=None if allowed_classes is None else _class_list(allowed_classes, "classifier.allowed_classes", source),
        min_confidence=min_conf,
        classifier_model=model,
    )


def _one_sided(key: str) -> str | None:
    """The bound a single number gives for a measurement key: a maximum for largest sizes, fractions, densities
    and counts (no bound otherwise: a range or a mapping is needed)."""
    return "max" if key.startswith("max_") or key in ("area_fraction", "density_per_mm2", "count") else None


def _check_measurement_key(group: str, key: str, where: str, source: str) -> None:
    """Refuse a key that no measurement of ``group`` produces (it would send every image to review).

    Examples
    --------
    >>> _check_measurement_key("phases", "phase_fraction_ferrite", "w", "s.yaml")
    >>> try:
    ...     _check_measurement_key("phases", "ferrite", "measurements.phases.ferrite", "s.yaml")
    ... except ValueError as exc:
    ...     print(str(exc).split(";")[0])  # doctest: +NORMALIZE_WHITESPACE
    s.yaml: measurements.phases.ferrite: unknown measurement
    (phase names go under phase_fractions: measurements.phases.phase_fractions.ferrite)
    """
    prefixes = _MEASUREMENT_PREFIXES[group]
    angle = "mean_intercept_by_angle_px_"
    if group == "grains" and key.startswith(angle) and len(key) > len(angle):
        from micro_seg.measure.intercept import ANGLES  # the only angles the intercepts are counted at

        if key[len(angle):] not in {str(a) for a in ANGLES}:
            raise SpecError(f"{source}: {where}: the intercepts are counted at {', '.join(map(str, ANGLES))} degrees "
                            f"only, not at {key[len(angle):]}; allowed: "
                            f"{', '.join(f'{angle}{a}' for a in ANGLES)}")
        return
    if key in _MEASUREMENT_KEYS[group] or any(key.startswith(p) and len(key) > len(p) for p in prefixes):
        return
    free = "<angle>" if group == "grains" else "<phase>"
    allowed = ", ".join(sorted(_MEASUREMENT_KEYS[group], key=str.lower) + [f"{p}{free}" for p in prefixes])
    hint = f" (phase names go under phase_fractions: measurements.phases.phase_fractions.{key})" if group == "phases" else ""
    raise SpecError(f"{source}: {where}: unknown measurement{hint}; allowed: {allowed}")


#: Fraction-valued measurement keys (and batch-column prefixes): limits on them must lie in [0, 1].
_FRACTION_KEYS = {"defects": ("area_fraction", "area_fraction_ci95")}
_FRACTION_PREFIXES = {"phases": ("phase_fraction_",)}


def _is_fraction_key(group: str, key: str) -> bool:
    """True for a key whose values are fractions (0..1), e.g. ``defects.area_fraction``.

    >>> _is_fraction_key("defects", "area_fraction"), _is_fraction_key("phases", "phase_fraction_ra_percent_a")
    (True, False)
    """
    if group.startswith(_BY_CLASS):
        group = "defects"
    if key in _FRACTION_KEYS.get(group, ()):
        return True
    return (any(key.startswith(p) for p in _FRACTION_PREFIXES.get(group, ()))
            and not key.startswith("phase_fraction_ra_percent_"))


def _check_fraction(rule: RangeRule, where: str, source: str, what: str = "a fraction") -> None:
    """Refuse a limit outside [0, 1] on a fraction (``5`` meant as 5 %).

    >>> try:
    ...     _check_fraction(RangeRule(max=5.0), "measurements.defects.area_fraction", "s.yaml")
    ... except ValueError as exc:
    ...     print(exc)
    s.yaml: measurements.defects.area_fraction: a fraction between 0 and 1, got 5.0 (for 5% write 0.05)
    """
    for v in (rule.min, rule.max):
        if v is not None and not 0.0 <= v <= 1.0:
            hint = f" (for {v:g}% write {v / 100:g})" if 0.0 < v <= 100.0 and what == "a fraction" else ""
            raise SpecError(f"{source}: {where}: {what} between 0 and 1, got {v}{hint}")


def _range_rules(spec: QCSpec):
    """``(where, group, key, rule)`` of every range rule of ``spec``: image checks (group ``"image"``), then the
    measurement rules of each group (phase-fraction rules are checked as they are parsed)."""
    for key, rule in spec.image.items():
        yield f"image.{key}", "image", key, rule
    for group, rules in spec.measurements.items():
        for key, rule in rules.items():
            yield f"measurements.{group}.{key}", group, key, rule


def _check_fraction_limits(spec: QCSpec, source: str) -> None:
    """Refuse limits outside [0, 1] on the fraction-valued keys of a spec file (``area_fraction: {max: 5}``
    meant as 5 %: every image would pass) and on the blur effect (``blur: 2`` could never fail).  (Checked on spec files; :func:`parse_spec` itself takes any
    number, so code can probe keys with wide limits.)"""
    for where, group, key, rule in _range_rules(spec):
        if group == "image" and key == "blur":  # a limit of 2 could never fail
            _check_fraction(rule, where, source, "the blur effect, 0 (sharp) to 1 (fully blurred), lies")
        elif key.endswith("_fraction") or key == "dynamic_range" if group == "image" else _is_fraction_key(group, key):
            _check_fraction(rule, where, source)


def _is_signed_key(key: str) -> bool:
    """True for the keys whose values may be negative: ASTM grain size numbers (G 00 is about -1).

    >>> _is_signed_key("G_intercept"), _is_signed_key("G_intercept_ci95"), _is_signed_key("max_feret_um")
    (True, False, False)
    """
    return key == "ala_G" or (key.startswith("G_") and not key.endswith("_ci95"))


def _check_negative_limits(spec: QCSpec, source: str) -> None:
    """Refuse a negative limit on a quantity that is never negative (``max_feret_um: -5`` fails every image that
    has a defect; ``min: -5`` checks nothing): a sign slip, not a spec. (Checked on spec files, as fractions are.)

    >>> spec = parse_spec({"measurements": {"defects": {"max_feret_um": -5}}})
    >>> try:
    ...     _check_negative_limits(spec, "s.yaml")
    ... except ValueError as exc:
    ...     print(exc)
    s.yaml: measurements.defects.max_feret_um: max -5 is negative, but max_feret_um is never negative
    """
    for where, _, key, rule in _range_rules(spec):
        if _is_signed_key(key):
            continue
        for bound in ("min", "max"):
            v = getattr(rule, bound)
            if v is not None and v < 0:
                raise SpecError(f"{source}: {where}: {bound} {v:g} is negative, but {key} is never negative")


def load_spec(path: str | os.PathLike) -> QCSpec:
    """Read and validate a QC spec file (``.yaml``, ``.yml`` or ``.toml``).

    Raises
    ------
    InputFileNotFoundError
        The file does not exist.
    SpecError
        Not valid YAML/TOML, a key is malformed (the message names it), or
        the file has no checks at all (it would pass every image).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"{path}: QC spec file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    else:
        import yaml

        try:
            data = safe_load_unique(text)
        except DuplicateKeyError as exc:
            raise SpecError(f"{path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    spec = parse_spec(data, source=str(path))
    model = spec.classifier_model
    if model and not Path(model).expanduser().is_absolute() and (path.parent / model / "card.yaml").is_file():
        # a model folder named relative to the spec is found from any working directory
        spec = replace(spec, classifier_model=str(path.parent / model))
    _check_fraction_limits(spec, str(path))
    _check_negative_limits(spec, str(path))
    if not spec.has_checks:
        raise SpecError(f"{path}: the spec has no checks (add image, measurements or classifier rules), "
                        "so every image would pass")
    return spec


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Reason:
    """One finding: which check, the value found and the limit it broke."""

    check: str
    value: Any
    limit: Any
    severity: str
    message: str
    bound: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``check``, ``value``, ``limit``, ...)."""
        return {"check": self.check, "value": self.value, "limit": self.limit, "bound": self.bound,
                "severity": self.severity, "message": self.message}


@dataclass
class QCResult:
    """Verdict and reasons for one image (see :func:`evaluate`)."""

    verdict: str
    reasons: list[Reason]
    quality: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """``{"verdict", "reasons": [...], "quality": {...}}``, JSON-ready: a quality value that was not measured
        (NaN: clipping and contrast of a float image outside 0..1) is None, numpy numbers are Python ones."""
        from micro_seg.jsonable import to_jsonable

        return to_jsonable({"verdict": self.verdict, "reasons": [r.as_dict() for r in self.reasons],
                            "quality": dict(self.quality)})


def combine_verdicts(reasons: list[Reason]) -> str:
    """``"fail"`` if any reason fails, ``"review"`` if any reason, else ``"pass"``.

    Examples
    --------
    >>> combine_verdicts([])
    'pass'
    """
    if any(r.severity == "fail" for r in reasons):
        return "fail"
    return "review" if reasons else "pass"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _unjudged(check: str, rule: RangeRule, message: str, bound: str | None = None) -> Reason:
    """A *review* reason for a range rule that could not be judged (no value): its limit is the rule's min, else
    its max, and ``bound`` says which (unless given)."""
    side = "min" if rule.min is not None else "max"
    return Reason(check, None, getattr(rule, side), "review", message, side if bound is None else bound)


def _range_reason(check: str, value: Any, rule: RangeRule) -> Reason | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _unjudged(check, rule, f"{check} was not measured; the spec requires it")
    value = float(value)
    judged = rule.judge(value)
    if judged is None:
        return None
    severity, bound, limit = judged
    word = "below" if bound == "min" else "above"
    return Reason(check, value, limit, severity, f"{check} = {_fmt(value)} is {word} the {bound} {_fmt(limit)}", bound)


def _table_column(group: str, key: str) -> str | None:
    """The ``images.csv`` column of ``key`` of ``group`` (as ``micro_seg.batch_worker.measure_segmentation``
    names them), or None when a batch row has no column for it under another name than ``<group>_<key>``.

    Grain keys are bare; phase keys bare too (``phase_fraction_<name>``, ``analysed_area_um2``) but for
    ``phases_n_fields``; every defect key is ``defects_<key>``.  ``pixel_size_um`` is the image's (one
    column for every group).  So no group reads another group's column of the same name
    (``mean_area_um2`` of the grains is not the defects' ``defects_mean_area_um2``).

    >>> _table_column("grains", "mean_area_um2"), _table_column("defects", "mean_area_um2")
    ('mean_area_um2', None)
    >>> _table_column("phases", "n_fields"), _table_column("defects", "pixel_size_um")
    (None, 'pixel_size_um')
    """
    if key == "pixel_size_um":
        return key
    if group == "grains" or (group == "phases" and key != "n_fields"):
        return key
    return None  # defects_<key> / phases_n_fields: the <group>_<key> form, tried first


def _lookup(measurements: Mapping | None, group: str, key: str) -> Any:
    """Find ``key`` of ``group`` in nested (``{"grains": {...}}``) or flat tables (``grains.<key>``,
    ``<group>_<key>``, or the column ``images.csv`` gives it: see :func:`_table_column`)."""
    if not measurements:
        return None
    if group.startswith(_BY_CLASS):  # one defect class: analyze's defects_by_class, batch's defects_<class>_<key>
        cls = group.removeprefix(_BY_CLASS)
        nested = measurements.get("defects_by_class")
        if isinstance(nested, Mapping) and isinstance(nested.get(cls), Mapping) and key in nested[cls]:
            return nested[cls][key]
        flat = f"defects_{cls}_{key}"
        return measurements[flat] if flat in measurements and not isinstance(measurements[flat], Mapping) else None
    nested = measurements.get(group)
    if isinstance(nested, Mapping) and key in nested:
        return nested[key]
    if isinstance(nested, Mapping):  # a batch column of one phase or angle, in the nested summary
        parts = _NESTED_PARTS.get(group, {})
        prefix = next((p for p in sorted(parts, key=len, reverse=True) if key.startswith(p)), None)
        part = nested.get(parts[prefix]) if prefix else None
        if isinstance(part, Mapping) and key[len(prefix):] in part:
            return part[key[len(prefix):]]
    for flat in (f"{group}.{key}", f"{group}_{key}", _table_column(group, key)):
        if flat is not None and flat in measurements and not isinstance(measurements[flat], Mapping):
            return measurements[flat]
    return None


def _no_defects(measurements: Mapping | None, group: str = "defects") -> bool:
    """True when the defect measurement (of ``group``: all classes, or one) ran and found no object (count 0)."""
    count = _to_float(_lookup(measurements, group, "count"))
    return count is not None and count == 0


def _to_float(value: Any) -> float | None:
    if value is None or isinstance(value, (bool, str)):
        try:
            return float(value) if isinstance(value, str) and value.strip() else None
        except ValueError:
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _phase_fraction(measurements: Mapping | None, phase: str) -> float | None:
    if not measurements:
        return None
    nested = measurements.get("phases")
    for fractions in ((nested or {}).get("phase_fractions") if isinstance(nested, Mapping) else None,
                      measurements.get("phase_fractions")):
        if isinstance(fractions, Mapping):
            return _to_float(fractions.get(phase))
    for key in (f"phases.phase_fractions.{phase}", f"phases_phase_fractions_{phase}", f"phase_fractions.{phase}",
                f"phase_fractions_{phase}", f"phase_fraction_{phase}", f"fraction_{phase}"):
        if key in measurements:
            return _to_float(measurements[key])
    return None


def pixel_quality(image: Any, spec: QCSpec) -> dict[str, float]:
    """The image-quality values that ``spec``'s pixel checks need, for ``evaluate(..., quality=...)``.

    Empty when the spec has no pixel checks (nothing is computed).  Lets a
    caller measure them while it still holds the pixels and release a huge
    image before segmenting it.  ``image``: an array or a
    :class:`~micro_seg.io.Micrograph` (its ``analysis_data``).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((32, 32), 255, np.uint8)
    >>> pixel_quality(img, parse_spec({"image": {"calibration": "required"}}))
    {}
    >>> q = pixel_quality(img, parse_spec({"image": {"clipped_high_fraction": 0.01}}))
    >>> q["clipped_high_fraction"]
    1.0
    """
    if not any(k in _IMAGE_ONE_SIDED for k in spec.image):
        return {}
    from micro_seg.quality import assess_image

    return assess_image(image).as_dict()  # np.asarray here dropped a masked array's mask: masked pixels judged


def _as_spec(spec: Any) -> "QCSpec":
    """A :class:`QCSpec`, or a spec file's path (:func:`load_spec`) or its mapping (:func:`parse_spec`) read as one;
    anything else is a SpecError (it was an AttributeError on ``spec.image``)."""
    if isinstance(spec, QCSpec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    if isinstance(spec, Mapping):
        return parse_spec(spec)
    raise SpecError(f"spec: got {type(spec).__name__}, not a QC spec (a QCSpec from micro_seg.qc.load_spec(path), "
                    "a spec file's path, or its mapping)")


def evaluate(
    image: Any,
    spec: QCSpec,
    *,
    pixel_size_um: float | None = None,
    magnification: float | None = None,
    measurements: Mapping[str, Any] | None = None,
    classification: Mapping[str, Any] | None = None,
    quality: Mapping[str, float] | None = None,
    no_pixels: str = "no image pixels were given",
) -> QCResult:
    """Judge one image against a spec: pass / review / fail with reasons.

    Parameters
    ----------
    image : ndarray, Micrograph or None
        The pixels for the image-quality checks; a
        :class:`~micro_seg.io.Micrograph` also supplies ``pixel_size_um`` and
        (from ``meta["magnification"]``) the magnification, and its
        ``analysis_data`` (without the SEM data bar) is what is measured.
        None: the pixel checks cannot run and each gives *review* (value
        null) with ``no_pixels`` as the reason (e.g. a batch's results table
        whose image was not found), unless ``quality`` holds its value.
    spec : QCSpec, path or mapping
        From :func:`load_spec` or :func:`parse_spec` (a spec file's path or mapping is read with them).
    pixel_size_um, magnification : float, optional
        Override what the micrograph records.
    measurements : mapping, optional
        ``{"grains": {...}, "phases": {...}, "defects": {...}}`` as printed by
        ``micro-seg analyze``, or a flat row as in a batch's ``images.csv``
        (grain keys bare or ``grains_<key>``, ``phase_fraction_<name>``,
        defect keys ``defects_<key>``: a group never reads another group's
        column).
    classification : mapping, optional
        Output of :func:`micro_seg.classifier.classify`: ``class``,
        ``probabilities``, optionally ``ood`` (bool) and ``ood_score``.
        Segmentation models may also report ``{"ood": ..., "ood_score": ...}``.
    quality : mapping, optional
        Precomputed :func:`micro_seg.quality.assess_image` values.
    no_pixels : str
        Why there are no pixels, for the reasons of the pixel checks that
        could not run.

    Returns
    -------
    QCResult

    Examples
    --------
    >>> import numpy as np
    >>> spec = parse_spec({"image": {"calibration": "required", "clipped_high_fraction": 0.01}})
    >>> img = np.full((32, 32), 255, np.uint8)
    >>> r = evaluate(img, spec)
    >>> r.verdict, sorted(x.check for x in r.reasons)
    ('review', ['image.calibration', 'image.clipped_high_fraction'])
    """
    spec = _as_spec(spec)
    reasons: list[Reason] = []
    pixels = image
    if image is not None and hasattr(image, "analysis_data"):
        # pixel_quality measures its analysis_data, if the checks need pixels (a batch gives quality measured before
        # it released them); released pixels that are needed: says so, naming the file (was 'image is empty')
        if pixel_size_um is None:
            pixel_size_um = getattr(image, "pixel_size_um", None)
        if magnification is None:
            meta = getattr(image, "meta", None) or {}
            magnification = _to_float(meta.get("magnification")) if isinstance(meta, Mapping) else None

    q: dict[str, float] = dict(quality or {})
    pixel_rules = [k for k in spec.image if k in _IMAGE_ONE_SIDED]
    if pixels is not None and not q:
        q = pixel_quality(pixels, spec)
    for key in pixel_rules:
        value = _to_float(q.get(key))
        if key in _SCALE_KEYS and value is not None and not math.isfinite(value):  # NaN: the grey scale is unknown
            from micro_seg.quality import NO_SCALE_REASON

            reason = _unjudged(f"image.{key}", spec.image[key], f"image.{key} was not measured: {NO_SCALE_REASON}")
        elif key in q:
            reason = _range_reason(f"image.{key}", q[key], spec.image[key])
        elif pixels is None:  # a check that cannot run is a finding (review), never left out
            rule = spec.image[key]
            reason = _unjudged(f"image.{key}", rule, f"image.{key} could not be evaluated: {no_pixels}")
        else:
            reason = _range_reason(f"image.{key}", None, spec.image[key])
        if reason:
            reasons.append(reason)

    calibrated = pixel_size_um is not None and pixel_size_um > 0
    if spec.calibration != "ignore" and not calibrated:
        reasons.append(Reason("image.calibration", None, "required", spec.calibration,
                              "no pixel size: the image is uncalibrated, measurements are in pixels", "required"))
    if "pixel_size_um" in spec.image:
        rule = spec.image["pixel_size_um"]
        if calibrated:
            reason = _range_reason("image.pixel_size_um", float(pixel_size_um), rule)
            if reason:
                reasons.append(reason)
        elif spec.calibration == "ignore":  # a window that cannot be checked is a finding, never a silent pass
            # (with a calibration check the missing pixel size is already its reason, at its severity)
            reasons.append(_unjudged("image.pixel_size_um", rule, "no pixel size: the image is uncalibrated, so its "
                                     "magnification window (image.pixel_size_um) cannot be checked; check it by hand "
                                     "or give --pixel-size"))
    if "magnification" in spec.image:
        rule = spec.image["magnification"]
        if magnification is None:
            reasons.append(_unjudged("image.magnification", rule, "the file records no magnification; check it by hand",
                                     bound=""))
        else:
            reason = _range_reason("image.magnification", float(magnification), rule)
            if reason:
                reasons.append(reason)

    if spec.out_of_distribution != "ignore" and (not classification or classification.get("ood") is None):
        # a check that cannot run is never a silent pass
        reasons.append(Reason("image.out_of_distribution", None, None, "review",
                              "no out-of-distribution score for this image (the spec needs a classifier model with "
                              "OOD statistics: --model)", "max"))
    elif spec.out_of_distribution != "ignore":
        if bool(classification.get("ood")):
            score = _to_float(classification.get("ood_score"))
            limit = _to_float(classification.get("ood_threshold"))
            reasons.append(Reason("image.out_of_distribution", score, limit, spec.out_of_distribution,
                                  f"the model finds this image unlike its training data (score {_fmt(score)} > {_fmt(limit)})", "max"))

    for group, rules in spec.measurements.items():
        for key, rule in rules.items():
            value = _to_float(_lookup(measurements, group, key))
            if value is None and group.startswith("defects") and key.startswith("max_") and _no_defects(measurements, group):
                value = 0.0  # no object at all: the largest one is nothing, not "not measured"
            reason = _range_reason(f"{group}.{key}", value, rule)
            if reason:
                reasons.append(reason)
    for phase, rule in spec.phase_fractions.items():
        reason = _range_reason(f"phases.phase_fractions.{phase}", _phase_fraction(measurements, phase), rule)
        if reason:
            reasons.append(reason)

    if spec.needs_classifier:
        reasons += _classifier_reasons(spec, classification)
    return QCResult(verdict=combine_verdicts(reasons), reasons=reasons, quality=q)


def _specimen_columns() -> dict[str, dict[str, str]]:
    """``{group: {spec key: specimens.csv column}}``: the specimen grain size numbers (from the mean of its
    fields, ASTM E112) and the means over its fields of the per-field quantities; nothing else of a spec has a
    specimen value."""
    from micro_seg.specimens import FIELD_QUANTITIES

    cols: dict[str, dict[str, str]] = {"grains": {"G_intercept": "G_intercept", "G_planimetric": "G_planimetric"},
                                       "phases": {}, "defects": {}}
    for q in FIELD_QUANTITIES:
        group, key = ("defects", q.removeprefix("defects_")) if q.startswith("defects_") else ("grains", q)
        cols[group][key] = f"{q}_mean"
    return cols


def _specimen_column(group: str, key: str) -> str | None:
    """The ``specimens.csv`` column judged for ``measurements.<group>.<key>``, or None if it has none.

    >>> _specimen_column("grains", "G_intercept"), _specimen_column("grains", "mean_intercept_um")
    ('G_intercept', 'mean_intercept_um_mean')
    >>> _specimen_column("defects", "area_fraction"), _specimen_column("defects", "max_feret_um")
    ('defects_area_fraction_mean', None)
    """
    if group == "phases" and key.startswith("phase_fraction_") and not key.startswith(
            ("phase_fraction_ci95_", "phase_fraction_ra_percent_")):
        return f"{key}_mean"
    return _specimen_columns().get(group, {}).get(key)  # one defect class (defects.by_class.<class>): none


def evaluate_specimen(row: Mapping[str, Any], spec: QCSpec, *,
                      no_pixels: str = "a specimen row has no image") -> QCResult:
    """Judge one row of a batch's ``specimens.csv`` (a specimen: statistics over its fields).

    Measurement rules are judged on the specimen's values: ``grains.G_intercept`` / ``G_planimetric`` on the
    specimen G (from the mean of its fields), a per-field quantity (``mean_intercept_um``,
    ``defects.area_fraction``, a phase fraction, ...) on its mean over the fields (``<column>_mean``).  A rule
    the row holds no value for (``ala_G``, ``defects.max_feret_um``, the magnification window...) gives
    *review* saying so, never a verdict on another column.  Calibration: the specimen is calibrated when none
    of its fields is (``n_uncalibrated`` 0); otherwise the spec's calibration severity, saying how many fields
    are not.  Fields the batch could not process: *review* (the statistics leave them out); none processed at
    all: *fail*.

    Examples
    --------
    >>> spec = parse_spec({"image": {"calibration": "fail"}, "measurements": {"grains": {"G_intercept": [5, 12]}}})
    >>> row = {"specimen": "A", "n_fields": "3", "n_failed": "0", "n_uncalibrated": "0", "G_intercept": "9.7"}
    >>> evaluate_specimen(row, spec).verdict
    'pass'
    >>> r = evaluate_specimen({**row, "n_uncalibrated": "1"}, spec)
    >>> r.verdict, r.reasons[0].message
    ('fail', '1 of 3 fields of this specimen are uncalibrated (no pixel size): their measurements are in pixels')
    """
    spec = _as_spec(spec)
    here = {"pixel_size_um", "magnification"}  # image windows a specimen row has no value for
    rest = replace(spec, calibration="ignore", measurements={}, phase_fractions={},
                   image={k: v for k, v in spec.image.items() if k not in here})
    status: list[Reason] = []

    n_fields, n_failed = _to_float(row.get("n_fields")), _to_float(row.get("n_failed"))
    if n_fields is not None and n_fields == 0:
        status.append(Reason("batch.status", n_failed, "ok", "fail", "the batch could not process any field of "
                              "this specimen: nothing was measured", ""))
    elif n_failed:
        total = int(n_fields or 0) + int(n_failed)
        status.append(Reason("batch.status", int(n_failed), 0, "review", f"{int(n_failed)} of {total} fields of "
                              "this specimen could not be processed: its statistics are over the others", ""))

    base = evaluate(None, rest, no_pixels=no_pixels)  # pixel, out-of-distribution and classifier checks
    reasons = status + base.reasons
    if spec.calibration != "ignore":
        n_uncal = _to_float(row.get("n_uncalibrated"))
        if n_uncal is None:
            reasons.append(Reason("image.calibration", None, "required", spec.calibration,
                                  "the specimen row records no n_uncalibrated: its calibration is unknown", "required"))
        elif n_uncal > 0:
            of = f" of {int(n_fields)}" if n_fields is not None else ""
            reasons.append(Reason("image.calibration", int(n_uncal), "required", spec.calibration,
                                  f"{int(n_uncal)}{of} fields of this specimen are uncalibrated (no pixel size): "
                                  "their measurements are in pixels", "required"))
    for key in (k for k in spec.image if k in here):
        rule = spec.image[key]
        reasons.append(_unjudged(f"image.{key}", rule, f"image.{key} cannot be judged on a specimen row (it records "
                                 f"no {'pixel size' if key == 'pixel_size_um' else key} of its fields); judge the "
                                 "batch's images.csv"))

    rules = [(f"{g}.{k}", g, k, r) for g, rs in spec.measurements.items() for k, r in rs.items()]
    rules += [(f"phases.phase_fractions.{p}", "phases", f"phase_fraction_{p}", r) for p, r in spec.phase_fractions.items()]
    for check, group, key, rule in rules:
        column = _specimen_column(group, key)
        if column is None:
            holds = ("the defect numbers of all classes together, not of one class" if group.startswith(_BY_CLASS)
                     else "the specimen G and the means of its fields' grain, phase and defect densities, sizes and "
                          "fractions")
            reasons.append(_unjudged(check, rule, f"{check} cannot be judged on a specimen row (specimens.csv holds "
                                     f"{holds}); judge the batch's images.csv"))
            continue
        reason = _range_reason(check, _to_float(row.get(column)), rule)
        if reason:
            reasons.append(reason)

    return QCResult(verdict=combine_verdicts(reasons), reasons=reasons, quality=base.quality)


def _classifier_reasons(spec: QCSpec, classification: Mapping[str, Any] | None) -> list[Reason]:
    if not classification or classification.get("class") is None:
        return [Reason("classifier.class", None, "a classifier model", "review",
                       "the spec has classifier rules but no classifier result was given (use --model)", "")]
    out: list[Reason] = []
    label = str(classification["class"])
    probs = classification.get("probabilities") or {}
    known = set(map(str, probs))
    if known:
        for key, names in (("forbidden_classes", spec.forbidden_classes), ("review_classes", spec.review_classes),
                           ("allowed_classes", spec.allowed_classes or ())):
            missing = [n for n in names if n not in known]
            if missing:
                raise SpecError(f"{spec.source}: classifier.{key}: {missing} are not classes of the model "
                                f"(its classes: {', '.join(sorted(known))})")
    if label in spec.forbidden_classes:
        out.append(Reason("classifier.forbidden_class", label, list(spec.forbidden_classes), "fail",
                          f"classified as forbidden class {label!r}", "forbidden"))
    elif label in spec.review_classes:
        out.append(Reason("classifier.review_class", label, list(spec.review_classes), "review",
                          f"classified as {label!r}, which the spec sends to review", "review"))
    elif spec.allowed_classes is not None and label not in spec.allowed_classes:
        out.append(Reason("classifier.allowed_class", label, list(spec.allowed_classes), "fail",
                          f"classified as {label!r}, not among the allowed classes", "allowed"))
    if spec.min_confidence is not None:
        conf = _to_float(probs.get(label)) if probs else _to_float(classification.get("confidence"))
        reason = _range_reason("classifier.confidence", conf, spec.min_confidence)
        if reason:
            out.append(reason)
    return out


# --------------------------------------------------------------------------- offending objects

#: Per-object size rules: spec key -> (column of :func:`~micro_seg.measure.measure_defects`' table without its
#: unit suffix, exponent of the pixel size).
_OBJECT_SIZE_KEYS = {"max_feret_um": ("feret_max", 1), "max_ecd_um": ("ecd", 1), "max_area_um2": ("area", 2)}


def offending_defects(defects: np.ndarray, spec: QCSpec, *, pixel_size_um: float | None = None) -> dict[int, str]:
    """Defect objects that break the spec's per-object size limits.

    The objects and their sizes are those of :func:`~micro_seg.measure.measure_defects` (its Feret diameters,
    not another library's), so an object is blamed exactly when the measurement's maximum breaks the limit.

    Parameters
    ----------
    defects : ndarray of int or bool
        Instance labels (0 = background; two or more distinct values) or a
        binary mask (objects are its 8-connected components), as
        :func:`~micro_seg.measure.measure_defects` takes them.
    spec : QCSpec
        Uses ``measurements.defects.max_feret_um`` / ``max_ecd_um`` /
        ``max_area_um2`` (per-object limits).  Field-level limits
        (``area_fraction``, ``density_per_mm2``) blame no single object and
        are not used here.
    pixel_size_um : float, optional
        Without it the limits cannot be applied in micrometres; sizes are
        then compared in pixels and the reason says so.

    Returns
    -------
    dict
        ``{label: reason text}`` of the offending objects: values of the
        instance image, or labels of the mask's connected components (as in
        ``measure_defects(defects).labels``).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((20, 20), bool); m[2:4, 2:4] = True; m[8:18, 5:7] = True
    >>> spec = parse_spec({"measurements": {"defects": {"max_feret_um": 5}}})
    >>> sorted(offending_defects(m, spec, pixel_size_um=1.0))
    [2]
    """
    from micro_seg.measure import measure_defects

    spec = _as_spec(spec)
    rules = {key: rules.max for key, rules in spec.measurements.get("defects", {}).items()
             if key in _OBJECT_SIZE_KEYS and rules.max is not None}
    if not rules:
        return {}
    arr = np.asarray(defects)
    res = measure_defects(arr, pixel_size_um=pixel_size_um, fields=None, what="defects", check_pieces=False)
    table = res.table
    keys = table["label"].to_numpy()  # the instance image's values, or the mask's connected components
    scale = float(pixel_size_um) if pixel_size_um else 1.0
    unit = "um" if pixel_size_um else "px"
    out: dict[int, str] = {}
    for key, limit in rules.items():
        column, power = _OBJECT_SIZE_KEYS[key]
        values = table[f"{column}_px"].to_numpy(dtype=float) * scale**power if len(table) else np.zeros(0)
        for label, value in zip(keys, values):
            if value > limit:
                out.setdefault(int(label), f"{key.removeprefix('max_')} {value:.3g} {unit} > {limit:g}")
    return out
