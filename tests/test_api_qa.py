"""The Python API as a notebook uses it: results that json.dumps takes, clear errors for the arrays users pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from micro_seg.errors import MicroSegError
from micro_seg.measure import measure_defects, measure_grains, measure_phases


def _strict_json(d: dict) -> dict:
    return json.loads(json.dumps(d, allow_nan=False))


@pytest.mark.filterwarnings("ignore")
def test_to_dict_of_degenerate_results_is_strict_json():
    # one grain filling the field: no boundary crossed, so no intercept (was inf / NaN in to_dict(): json.dumps
    # wrote the invalid 'Infinity' / 'NaN', or raised with allow_nan=False)
    one = measure_grains(np.ones((50, 50), np.int32), pixel_size_um=0.5).to_dict()
    assert _strict_json(one)["n_grains"] == 1
    assert one["mean_intercept_px"] is None and one["G_intercept"] is None
    # a field without pores: no object to average
    none = measure_defects(np.zeros((50, 50), bool), pixel_size_um=0.5).to_dict()
    assert _strict_json(none)["count"] == 0
    # one phase everywhere
    ph = measure_phases(np.ones((40, 40), np.uint8), pixel_size_um=0.5).to_dict()
    assert _strict_json(ph)["phase_fractions"] == {"1": 1.0}
    # an ordinary result keeps its numbers
    lab = np.zeros((60, 60), np.int32)
    lab[:, :30], lab[:, 30:] = 1, 2
    two = measure_grains(lab, pixel_size_um=0.5)
    assert _strict_json(two.to_dict())["n_grains"] == 2
    assert two.to_dict()["mean_intercept_um"] == pytest.approx(two.summary["mean_intercept_um"])
