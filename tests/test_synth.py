"""Tests of micro_seg.synth: truth known by construction, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from micro_seg.synth import (
    GRAIN_KINDS,
    boolean_disks,
    boolean_disks_fraction,
    grain_seeds,
    relabel_consecutive,
    voronoi_from_seeds,
    voronoi_labels,
)


@pytest.mark.parametrize("kind", GRAIN_KINDS)
def test_voronoi_labels_consecutive_and_deterministic(kind):
    a = voronoi_labels((96, 128), n_grains=40, seed=7, kind=kind)
    b = voronoi_labels((96, 128), n_grains=40, seed=7, kind=kind)
    c = voronoi_labels((96, 128), n_grains=40, seed=8, kind=kind)
    assert a.dtype == np.int32 and a.shape == (96, 128)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    u = np.unique(a)
    np.testing.assert_array_equal(u, np.arange(1, a.max() + 1))


def test_voronoi_nearest_seed_exact():
    seeds = np.array([[2.0, 2.0], [2.0, 9.0], [8.0, 5.0]])
    idx = voronoi_from_seeds((11, 12), seeds)
    rr, cc = np.mgrid[:11, :12]
    d = (rr[..., None] - seeds[:, 0]) ** 2 + (cc[..., None] - seeds[:, 1]) ** 2
    np.testing.assert_array_equal(idx, d.argmin(axis=-1))


def test_poisson_voronoi_mean_area():
    # Grains whose seed lies inside the field tile it on average: mean area = A / n.
    shape, n = (400, 400), 400
    areas = []
    for s in range(3):
        seeds = grain_seeds(shape, n_grains=n, seed=s)
        idx = voronoi_from_seeds(shape, seeds)
        assert np.sum(np.all((seeds >= -0.5) & (seeds <= 399.5), axis=1)) == n
        counts = np.bincount(idx.ravel(), minlength=len(seeds))[:n]
        areas.append(counts.mean())
    assert np.mean(areas) == pytest.approx(shape[0] * shape[1] / n, rel=0.05)


def test_elongated_grains_have_aspect_ratio():
    from skimage.measure import regionprops

    lab = voronoi_labels((300, 300), n_grains=150, seed=1, kind="hardcore", aspect_ratio=4)
    props = [p for p in regionprops(lab) if p.area > 50]
    ratio = np.median([p.axis_major_length / p.axis_minor_length for p in props])
    orient = np.median([abs(p.orientation) for p in props])
    assert 2.5 < ratio < 6
    assert orient > np.deg2rad(70)  # long axis along the columns (orientation ~ +-90 deg)


def test_relabel_consecutive_sparse_keys():
    keys = np.array([[10**12, 5], [5, 3]])
    np.testing.assert_array_equal(relabel_consecutive(keys), [[3, 2], [2, 1]])


def test_boolean_disk_fraction_matches_formula():
    lam, r = 0.0015, 7.0
    m = boolean_disks((1024, 1024), intensity=lam, radius=r, seed=0)
    assert m.dtype == bool
    assert m.mean() == pytest.approx(boolean_disks_fraction(lam, r), abs=0.015)
    # unbiased at the edges too
    edge = np.concatenate([m[:20].ravel(), m[-20:].ravel(), m[:, :20].ravel(), m[:, -20:].ravel()])
    assert edge.mean() == pytest.approx(boolean_disks_fraction(lam, r), abs=0.04)


def test_bad_arguments_raise_valueerror():
    with pytest.raises(ValueError, match="kind"):
        voronoi_labels((10, 10), n_grains=3, kind="nope")
    with pytest.raises(ValueError, match="n_grains"):
        voronoi_labels((10, 10), n_grains=0)
    with pytest.raises(ValueError, match="shape"):
        voronoi_labels((0, 10), n_grains=3)
    with pytest.raises(ValueError, match="radius"):
        boolean_disks((10, 10), intensity=0.1, radius=-1)
