"""NIST steel micrograph with hand-traced boundaries vs NIST's own E112 intercept segments."""

from __future__ import annotations

import numpy as np
import pytest

from micro_seg.measure import g_from_intercept, measure_grains_from_boundaries

PIXEL_SIZE_UM = 0.2252  # 222 px = 50 um (ref_steel_micrograph/readme.md)


@pytest.mark.shared_data
def test_nist_steel_mean_intercept_matches_nist_e112_csv(shared_datasets):
    import pandas as pd

    from micro_seg.io import read_micrograph

    root = shared_datasets / "nist_gsat"
    img = read_micrograph(root / "ex_segmentation/optical_etched/ref_steel_micrograph/grain_structures_steel_highlighted.tif").data
    mask = img == 0  # hand-traced boundary
    res = measure_grains_from_boundaries(mask, pixel_size_um=PIXEL_SIZE_UM)
    csv = pd.read_csv(root / "ex_grain_intercept/optical_etched/grains_steel_highlighted_distances_e112.csv")
    assert "Segment Distance (Pixels)" in csv.columns and len(csv) == 127
    nist_mean_um = float(csv["Segment Distance (Pixels)"].mean()) * PIXEL_SIZE_UM
    s = res.summary
    assert s["mean_intercept_um"] == pytest.approx(nist_mean_um, rel=0.05)
    assert abs(s["G_intercept"] - g_from_intercept(nist_mean_um / 1000)) < 0.15
    assert s["pixel_size_um"] == PIXEL_SIZE_UM and np.isfinite(s["G_planimetric"])
