"""Every benchmark scenario runs at tiny sizes, and compares like with like (no timing assertions)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_batch  # noqa: E402
import bench_encode  # noqa: E402
import bench_img2fmri  # noqa: E402
import bench_load  # noqa: E402
import bench_movie  # noqa: E402
import bench_readout  # noqa: E402
import bench_training  # noqa: E402
import benchmark  # noqa: E402


def test_readout_sides_compute_the_same_responses():
    _, ours = bench_readout.berg_readout(dim=3000, n_voxels=40, n_batches=3)
    _, theirs = bench_readout.berg_style_readout(dim=3000, n_voxels=40, n_batches=3)
    assert ours.shape == theirs.shape == (30, 40)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() <= 1e-4


def test_group_scenario(img2fmri_model_dir):
    result = bench_img2fmri.run(quick=True, berg_dir=img2fmri_model_dir.parents[3])
    assert result["overlap_voxels"] == 9641 and result["speedup"] > 0


def test_encode_scenarios(img2fmri_model_dir, tmp_path):
    rows = bench_encode.bench_images(img2fmri_model_dir.parents[3], n=4, batch_size=2)
    rows += bench_encode.bench_clips(tmp_path, n=1, batch_size=1, n_components=2)
    assert [r["scenario"] for r in rows] == ["encode images"] * 3 + ["encode clips"] * 2
    assert all(r["seconds"] > 0 for r in rows) and "1666 voxels" in rows[0]["size"]


def test_movie_scenario(img2fmri_model_dir, tmp_path):
    rss = bench_movie.rss_part(False, tmp_path, minutes=(0.05, 0.1))
    assert set(rss["runs"]) == {"0.05min", "0.1min"} and rss["runs"]["0.1min"]["n_samples"] == 12
    speed = bench_movie.speed_part(False, tmp_path, seconds=2.0)
    assert speed["n_samples"] == 4 and speed["predict_movie_vs_encode"] > 0


def test_load_and_training_scenarios():
    load = bench_load.run(quick=True)
    assert load["native_bytes"] > 0 and load["ratio_mmap"] > 0
    training = bench_training.run(quick=True)
    assert training["n_voxels"] == 5000 and training["train"]["seconds"] > 0


def test_table_has_a_row_per_variant():
    rows = [{"scenario": "s", "variant": "a", "seconds": 1.0, "ratio": 2.0, "ratio_meaning": "x"},
            {"scenario": "s", "variant": "b", "seconds_per_batch": 0.5, "peak_rss_mb": 12.0}]
    table = benchmark.format_table(rows).splitlines()
    assert len(table) == 4 and "2 (x)" in table[2] and "| 12 |" in table[3]


def test_batch_scenario(img2fmri_model_dir, ray_cluster):
    result = bench_batch.run(quick=True, berg_dir=img2fmri_model_dir.parents[3], n_images=4, film_s=2.0, rss_units=1)
    assert set(result["seconds"]) == {f"{k} / {v}" for k in ("images", "films")
                                      for v in ("direct", "local", "ray 1 actor", "ray 2 actors")}
    assert all(s > 0 for s in result["seconds"].values()) and result["items_per_s"]["films / local"] > 0
    assert set(result["peak_rss_mib"]) == {"1 units", "4 units"} and result["rss_growth"] > 0
