"""report.html: self-contained, escaped, with the sections a reviewer needs."""

from __future__ import annotations

import base64
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from micro_seg.report import fmt_ci, histogram_png, thumbnail_data_uri, write_report
from micro_seg.store import ResultsStore


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.tags, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href"):
                self.urls.append(v)

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture()
def report(tmp_path):
    from PIL import Image

    (tmp_path / "overlays").mkdir()
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "overlays" / "a_overlay.png")
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run(in_dir="/data/steel", out_dir=str(tmp_path), software_version="9.9",
                              parameters={"model": "grain-boundaries"}, model_name="grain-boundaries",
                              model_task="grains", model_sha256="ab" * 32, workers=2)
        store.record("S1/a.tif", {"abspath": "/data/steel/S1/a.tif", "status": "ok", "specimen": "S1",
                                  "overlay_path": "overlays/a_overlay.png", "pixel_size_um": 0.5}, run_id=run,
                     measurements={"n_grains": 120, "G_planimetric": 8.1, "mean_intercept_um": 20.0},
                     objects={"grains": {"label": [1, 2, 3], "area_um2": [10.0, 100.0, 1000.0]}},
                     flags=[{"source": "qc", "check": "image.blur", "severity": "review", "value": 0.5,
                             "limit": 0.45, "message": "blurred"}])
        store.record("S1/bad.tif", {"abspath": "/data/steel/S1/bad.tif", "status": "failed", "specimen": "S1",
                                    "error": "CorruptFileError: <bad> & truncated"}, run_id=run)
        rows = [
            {"path": "S1/a.tif", "status": "ok", "specimen": "S1", "overlay": "overlays/a_overlay.png",
             "n_grains": 120, "G_planimetric": 8.1, "mean_intercept_um": 20.0, "qc_verdict": "review"},
            {"path": "S1/bad.tif", "status": "failed", "specimen": "S1", "error": "CorruptFileError: <bad> & truncated"},
        ]
        spec_rows = [{"specimen": "S1", "n_fields": 1, "n_failed": 1, "G_intercept": 8.49,
                      "mean_intercept_um_mean": 20.0, "mean_intercept_um_ci95": float("nan")}]
        path = write_report(tmp_path / "report.html", store=store, run_id=run, image_rows=rows,
                            specimen_rows=spec_rows, out_dir=tmp_path)
    return path.read_text(encoding="utf-8")


def test_report_is_self_contained_and_well_formed(report):
    p = _Collector()
    p.feed(report)
    assert p.urls and all(u.startswith("data:image/") for u in p.urls)  # thumbnails and histograms inline
    assert "script" not in p.tags and "link" not in p.tags
    assert report.startswith("<!DOCTYPE html>") and report.rstrip().endswith("</html>")


def test_report_has_provenance_specimens_flags_and_escaped_failures(report):
    for text in ("Provenance", "ab" * 32, "grain-boundaries", "micro-seg 9.9", "Specimens", "S1", "8.5",
                 "Overlays", "QC verdicts and flags", "image.blur", "Failures (1)"):
        assert text in report, text
    assert "CorruptFileError: &lt;bad&gt; &amp; truncated" in report
    assert "<bad>" not in report


def test_histogram_and_thumbnail_are_png_and_jpeg_data_uris(tmp_path):
    uri = histogram_png([1.0, 2.0, 2.5, np.nan], title="t", xlabel="x")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert thumbnail_data_uri(tmp_path / "missing.png") is None


def test_fmt_ci():
    assert fmt_ci(8.123, 0.21, 2.6) == "8.12 ± 0.21 (2.6 %RA)"
    assert fmt_ci(5.0, float("nan"), float("nan")) == "5.00"
    assert fmt_ci(None, 1, 1) == ""


def test_rendering_figures_uses_no_gui_backend():
    code = ("import sys\nfrom micro_seg.report import histogram_png\nhistogram_png([1, 2, 3], title='t', xlabel='x')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'PyQt6', 'PySide6', 'qtpy', 'napari')"
            " or m == 'matplotlib.pyplot']\nprint(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_overlay_caption_shows_the_headline_g_the_qc_badge_judges(tmp_path):
    # the caption showed G_planimetric as "G" beside a QC badge that judges G_intercept: "G 9.9 fail" under G 7-10
    from PIL import Image

    (tmp_path / "overlays").mkdir()
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "overlays" / "a_overlay.png")
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "overlays" / "b_overlay.png")
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run(in_dir="/in", out_dir=str(tmp_path), software_version="0", parameters={})
        rows = [{"path": "a.tif", "status": "ok", "specimen": "S", "overlay": "overlays/a_overlay.png", "n_grains": 90,
                 "G_planimetric": 9.9, "G_intercept": 10.3, "qc_verdict": "fail"},
                {"path": "b.tif", "status": "ok", "specimen": "S", "overlay": "overlays/b_overlay.png", "n_grains": 90,
                 "G_planimetric": 9.9, "G_intercept": None, "qc_verdict": "fail"}]
        for r in rows:
            store.record(r["path"], {"abspath": f"/in/{r['path']}", "status": "ok"}, run_id=run)
        html = write_report(tmp_path / "report.html", store=store, run_id=run, image_rows=rows, specimen_rows=[],
                            out_dir=tmp_path).read_text(encoding="utf-8")
    assert "<b>a.tif</b> · G (intercept) 10.3 · grains 90" in html
    assert "<b>b.tif</b> · G (planimetric) 9.9 · grains 90" in html  # G to 0.1 (E112), not 9.90


def test_tables_cut_at_max_rows_say_so(tmp_path, monkeypatch):
    # "Images (5000)" above 1000 rows, "Failures (1500)" above 1000, with nothing saying the rest are not shown
    import micro_seg.report as report

    monkeypatch.setattr(report, "MAX_TABLE_ROWS", 2)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run(in_dir="/in", out_dir=str(tmp_path), software_version="0", parameters={})
        rows = [{"path": f"{i}.tif", "status": "failed", "error": "CorruptFileError: x"} for i in range(3)]
        html = write_report(tmp_path / "report.html", store=store, run_id=run, image_rows=rows, specimen_rows=[],
                            out_dir=tmp_path).read_text(encoding="utf-8")
    assert "The first 2 are listed; all 3 in <code>images.csv</code>" in html
    assert "The first 2 images are shown; all 3 rows and all columns in <code>images.csv</code>" in html
    assert html.count("<td>2.tif</td>") == 0


def test_overlay_caption_gives_g_to_a_tenth_and_leaves_out_a_missing_one(tmp_path):
    # the caption gave G to three significant figures (G 7.85, 10.3, 0.0500) where E112 reports it to 0.1, and a
    # NaN G as "G (planimetric) " with no value
    from PIL import Image

    (tmp_path / "overlays").mkdir()
    rows = [{"path": "a.tif", "status": "ok", "specimen": "S", "overlay": "overlays/a_overlay.png", "n_grains": 90,
             "G_planimetric": 7.6, "G_intercept": 7.8512, "qc_verdict": "pass"},
            {"path": "b.tif", "status": "ok", "specimen": "S", "overlay": "overlays/b_overlay.png", "n_grains": 3,
             "G_planimetric": float("nan"), "G_intercept": float("nan"), "qc_verdict": "review"}]
    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run(in_dir="/in", out_dir=str(tmp_path), software_version="0", parameters={})
        for r in rows:
            Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / r["overlay"])
            store.record(r["path"], {"abspath": f"/in/{r['path']}", "status": "ok"}, run_id=run)
        html = write_report(tmp_path / "report.html", store=store, run_id=run, image_rows=rows, specimen_rows=[],
                            out_dir=tmp_path).read_text(encoding="utf-8")
    assert "<b>a.tif</b> · G (intercept) 7.9 · grains 90" in html
    assert "<b>b.tif</b> · grains 3" in html
