"""Every benchmark scenario runs at tiny sizes, and compares like with like (no timing assertions)."""

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_batch  # noqa: E402
import bench_encode  # noqa: E402
import benchutil  # noqa: E402
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


@pytest.mark.slow  # a benchmark scenario at its quick size
def test_group_scenario(img2fmri_model_dir):
    result = bench_img2fmri.run(quick=True, berg_dir=img2fmri_model_dir.parents[3])
    ours, floor = result["berg_group_mni_ms_per_frame"], result["matmul_floor_ms_per_frame"]
    assert result["overlap_voxels"] == 9641 and result["map_shape"] == [3 * 9641, 512]
    assert result["speedup"] == pytest.approx(result["img2fmri_subject_space_ms_per_frame"] / ours)
    assert result["berg_vs_floor"] == pytest.approx(ours / floor)
    assert result["device"] == benchutil.cpu_name() and "cores" in result["device"]


@pytest.mark.slow  # a benchmark scenario at its quick size
def test_encode_scenarios(img2fmri_model_dir, tmp_path):
    rows = bench_encode.bench_images(img2fmri_model_dir.parents[3], n=4, batch_size=2)
    rows += bench_encode.bench_clips(tmp_path, n=2, batch_size=1, n_components=2)
    assert [r["scenario"] for r in rows] == ["encode images"] * 3 + ["encode clips"] * 5
    assert rows[0]["ratio"] == pytest.approx(rows[0]["seconds"] / rows[1]["seconds"])  # berg / backbone alone
    assert rows[2]["ratio"] == pytest.approx(rows[2]["seconds"] / rows[0]["seconds"])  # time(2N) / time(N)
    assert "1666 voxels" in rows[0]["size"]
    assert [r.get("target") for r in rows if "ratio" in r] == ["<= 1.15", "<= 2.1", "<= 1.15", None]
    capacity = 256 * 2**20 // (4 * (4_084_096 + 2 + 108_219))  # features, components, voxels of one clip
    assert f"up to {capacity} clips" in rows[3]["variant"] and "batch of 2" in rows[6]["variant"]
    assert all(r["device"] == benchutil.cpu_name() for r in rows)


@pytest.mark.slow  # a benchmark scenario at its quick size
def test_movie_scenario(img2fmri_model_dir, tmp_path):
    rss = bench_movie.rss_part(False, tmp_path, minutes=(0.05, 0.1))
    assert set(rss["runs"]) == {"0.05min", "0.1min"} and rss["runs"]["0.1min"]["n_samples"] == 12
    speed = bench_movie.speed_part(False, tmp_path, seconds=2.0)
    assert set(speed["films"]) == set(bench_movie.FILMS)
    for film in speed["films"].values():
        assert film["n_samples"] == 4
        assert film["predict_movie_vs_encode"] == pytest.approx(film["predict_movie_samples_per_s"]
                                                                / film["encode_in_memory_samples_per_s"])
        assert film["cpu_limit"] == pytest.approx(film["encode_cpu_s"] / (film["encode_cpu_s"] + film["decode_cpu_s"]))
        assert 0 < film["cpu_limit"] < 1


@pytest.mark.slow  # a benchmark scenario at its quick size
def test_load_and_training_scenarios():
    load = bench_load.run(quick=True)
    assert load["native_bytes"] < load["legacy_bytes"]  # float32 safetensors against BERG's float64 pickles
    assert load["ratio_mmap"] == pytest.approx(load["legacy_np_load_s"] / load["native_mmap_s"])
    training = bench_training.run(quick=True)
    assert training["n_voxels"] == 5000 and set(training["train"]) == {"seconds", "peak_rss_gb", "median_r_signal"}
    assert 0.2 < training["train"]["median_r_signal"] <= 1  # the synthetic signal voxels are learnt


def test_every_scenario_takes_the_size_and_the_device(monkeypatch, tmp_path, capsys):
    for scenario in benchmark.SCENARIOS.values():
        inspect.signature(scenario).bind(True, "cpu")  # how main() calls each one
    calls = []

    def broken(quick, device):
        raise RuntimeError("scenario failed")

    monkeypatch.setitem(benchmark.SCENARIOS, "readout", broken)
    monkeypatch.setitem(benchmark.SCENARIOS, "load", lambda quick, device: calls.append((quick, device)) or [
        {"scenario": "load", "variant": "v", "seconds": 1.0}])
    out = tmp_path / "rows.json"
    assert benchmark.main(["--quick", "--scenarios", "readout", "load", "--json", str(out)]) == 1
    assert calls == [(True, "cpu")] and [r["scenario"] for r in json.loads(out.read_text())["rows"]] == ["load"]
    assert "[readout] FAILED" in capsys.readouterr().err


def test_table_has_a_row_per_variant_and_marks_each_target():
    rows = [{"scenario": "s", "variant": "a", "seconds": 1.0, "ratio": 2.0, "ratio_meaning": "x", "target": ">= 1000"},
            {"scenario": "s", "variant": "c", "seconds": 1.0, "ratio": 1.1, "ratio_meaning": "y", "target": "<= 1.15",
             "device": "GPU X"},
            {"scenario": "s", "variant": "b", "seconds_per_batch": 0.5, "peak_rss_mb": 12.0}]
    table = benchmark.format_table(rows).splitlines()
    assert len(table) == 5 and "| 2 (x) | >= 1000 | MISS |" in table[2] and "| GPU X |" in table[3]
    assert "| 1.1 (y) | <= 1.15 | pass |" in table[3] and table[4].endswith("|  |  |  | 12 |")


@pytest.mark.parametrize("ratio, target, met", [(1.15, "<= 1.15", True), (1.16, "<= 1.15", False),
                                                (0.9, ">= 0.9", True), (1.2, "< 1.2", False), (1.5, "> 1", True)])
def test_meets(ratio, target, met):
    assert benchutil.meets(ratio, target) is met


def test_best_of_interleaves_and_keeps_the_best():
    calls = []
    times = benchutil.best_of({name: (lambda name=name: calls.append(name)) for name in "abc"}, repeats=3)
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"  # warm-up, then each round starts one side later
    assert set(times) == {"a", "b", "c"} and all(t >= 0 for t in times.values())


@pytest.mark.slow  # a benchmark scenario at its quick size
def test_batch_scenario(img2fmri_model_dir, ray_cluster):
    result = bench_batch.run(quick=True, berg_dir=img2fmri_model_dir.parents[3], n_images=4, film_s=2.0, rss_units=1)
    assert set(result["seconds"]) == {f"{k} / {v}" for k in ("images", "films")
                                      for v in ("direct", "local", "ray 1 actor", "ray 2 actors")}
    assert result["items_per_s"]["films / local"] == pytest.approx(3 * 4 / result["seconds"]["films / local"])
    assert set(result["peak_rss_mib"]) == {"1 units", "4 units"}
    assert result["rss_growth"] == pytest.approx(result["peak_rss_mib"]["4 units"] / result["peak_rss_mib"]["1 units"])
