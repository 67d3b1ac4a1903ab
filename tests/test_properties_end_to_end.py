"""Issue 8 end to end: synthetic micrographs of several specimens with known grain sizes
-> batch with the shipped grain model -> property table -> Hall-Petch fit and plot (CLI and napari).

The property table is made from known constants and each specimen's TRUE mean intercept
(measured on its ground-truth labels), so the fit on the model's grain sizes must recover k.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from micro_seg.cli import main
from micro_seg.measure import measure_grains
from micro_seg.registry import list_models
from micro_seg.synth import grain_micrograph

S0, K = 70.0, 0.74  # MPa, MPa m^0.5 (low-carbon-steel-like)
PX = 0.5  # um
SPECIMENS = {"S1": 60, "S2": 120, "S3": 240, "S4": 480}  # grains per 384 x 384 field

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def specimen_batch(tmp_path_factory):
    if "grain-boundaries" not in {c.name for c in list_models()}:
        pytest.skip("the shipped grain-boundaries model is not in models/")
    import tifffile

    root = tmp_path_factory.mktemp("e2e")
    images = root / "micrographs"
    true_d = {}
    for k, (spec, n) in enumerate(SPECIMENS.items()):
        (images / spec).mkdir(parents=True)
        intercepts = []
        for f in range(2):
            syn = grain_micrograph((384, 384), n_grains=n, difficulty="clean", pixel_size_um=PX, seed=100 * k + f)
            tifffile.imwrite(images / spec / f"field{f}.tif", syn.image, resolution=(1 / PX, 1 / PX),
                             imagej=True, metadata={"unit": "um"})
            intercepts.append(measure_grains(syn.labels, pixel_size_um=PX).summary["mean_intercept_um"])
        true_d[spec] = float(np.mean(intercepts))
    props = root / "tensile.csv"
    pd.DataFrame({
        "sample_id": list(SPECIMENS),
        "anneal_temperature_C": [650, 700, 750, 800],
        "yield_strength_MPa": [S0 + K * (true_d[s] * 1e-6) ** -0.5 for s in SPECIMENS],
    }).to_csv(props, index=False)
    out = root / "results"
    code = main(["batch", str(images), str(out), "--model", "grain-boundaries", "--workers", "0", "--quiet", "--json"])
    assert code == 0
    return out, props, true_d


def test_cli_batch_then_link_recovers_hall_petch(specimen_batch, capsys, tmp_path):
    out, props, true_d = specimen_batch
    capsys.readouterr()
    plot = tmp_path / "hall_petch.png"
    code = main(["link", str(out), str(props), "--on", "sample_id", "--plot", str(plot), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0
    assert res["n_matched"] == 4 and res["unmatched"] == []
    fit = res["fit"]
    assert fit["d"] == "mean_intercept_um" and fit["units"]["k"] == "MPa·m^0.5"
    # the model's grain sizes are close to the truth, so k comes back close to the constant used
    assert fit["k"] == pytest.approx(K, rel=0.15)
    assert plot.stat().st_size > 5000
    images = pd.read_csv(out / "images.csv")
    measured = images.groupby(images["path"].map(lambda p: p.split("/")[0]))["mean_intercept_um"].mean()
    for spec, d in true_d.items():
        assert measured[spec] == pytest.approx(d, rel=0.12)


def test_cli_link_on_the_batch_specimens_csv_matches_the_folder(specimen_batch, capsys):
    out, props, _ = specimen_batch
    capsys.readouterr()
    fits = []
    for results in (out, out / "specimens.csv"):
        code = main(["link", str(results), str(props), "--on", "sample_id", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        fits.append(json.loads(captured.out)["fit"])
    for key in ("sigma0", "sigma0_ci95", "k", "k_ci95", "n"):
        assert fits[1][key] == pytest.approx(fits[0][key], rel=1e-6), key


@pytest.mark.gui
def test_napari_properties_widget_on_the_batch(specimen_batch, make_napari_viewer):
    pytest.importorskip("napari")
    from napari_plugin._properties import PropertiesWidget

    out, props, _ = specimen_batch
    w = PropertiesWidget(make_napari_viewer())
    w._results.value = out
    w._table.value = props
    result = w.fit()
    assert result is not None and result.summary["n_matched"] == 4
    assert result.summary["fit"]["k"] == pytest.approx(K, rel=0.15)
