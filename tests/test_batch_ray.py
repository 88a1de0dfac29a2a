"""The Ray engine on a local 2-CPU cluster (127.0.0.1): same outputs as the local engine, survives a killed actor."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from _support import job_dict, make_assets, read_outputs

import berg.batch

pytestmark = pytest.mark.slow  # a local Ray cluster runs every job

RAY = {"actors": 2, "cpus_per_actor": 0.5, "cpus_per_decode": 0.5, "decode_tasks": 1}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch_ray")
    make_assets(folder)
    local = folder / "local"
    assert berg.batch.run(job_dict(folder, local), show_progress=False).ok
    return folder, read_outputs(local)


def _assert_same(ours: dict, reference: dict) -> None:
    """Every output within 1e-6 of the largest reference value: an actor's torch runs with the intra-op thread
    count of its CPU share (Ray's OMP_NUM_THREADS), the local engine with the driver's, and kernels split their
    sums by thread count, so the last bits may differ (seen: 2.4e-7 on one machine, 0 on another)."""
    assert ours.keys() == reference.keys() and len(reference) == 10
    for key, expected in reference.items():
        assert ours[key].shape == expected.shape, key
        assert np.abs(ours[key] - expected).max() <= 1e-6 * np.abs(expected).max(), key


def test_ray_engine_equals_local_engine_and_reports_a_corrupt_film(assets, ray_cluster, tmp_path):
    folder, reference = assets
    job = job_dict(folder, tmp_path / "out", **RAY)
    (folder / "films" / "zz_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    try:
        result = berg.batch.run(job, engine="ray", show_progress=False)
    finally:
        (folder / "films" / "zz_broken.mp4").unlink()
    assert (result.n_units, result.n_done) == (9, 8)
    assert [(f["unit"], f["error_type"]) for f in result.failures] == [
        ("sub-01_task-zzbroken_desc-testresnet18", "InvalidStimulusError")]
    assert len((tmp_path / "out" / "logs" / "failures.tsv").read_text().splitlines()) == 2  # header + 1 row
    _assert_same(read_outputs(tmp_path / "out"), reference)


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(assets, ray_cluster, tmp_path):
    folder, reference = assets
    out = tmp_path / "out"
    job = job_dict(folder, out, **RAY)
    job["rows"][0]["shard_size"] = 1  # 10 image units + 2 films
    killed = []

    def kill_first_worker():  # SIGKILL the process that wrote the first completion record, while others run
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            records = list((out / "logs" / "units").glob("*.json")) if (out / "logs").exists() else []
            if records:
                pid = json.loads(records[0].read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, len(records)))
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_first_worker)
    watcher.start()
    result = berg.batch.run(job, engine="ray", show_progress=False)
    watcher.join()
    records = [json.loads(p.read_text()) for p in sorted((out / "logs" / "units").glob("*.json"))]
    assert killed and killed[0][1] < 12, "the actor was killed after the run had finished"
    assert result.ok and (result.n_units, result.n_done) == (12, 12)
    assert len(records) == 12 and len({r["params"]["unit"] for r in records}) == 12
    assert any(r["pid"] != killed[0][0] for r in records)  # a restarted (or the other) actor took over
    ours = read_outputs(out)
    assert len(ours) == 14 and all(np.isfinite(v).all() for v in ours.values())
    films = {k: v for k, v in ours.items() if "responses.h5" not in k}
    _assert_same({**films, **{k: v for k, v in reference.items() if "responses.h5" in k}}, reference)
    shards = np.concatenate([ours[k] for k in sorted(ours) if "sub-02" in k and "responses.h5" in k])
    expected = np.concatenate([reference[k] for k in sorted(reference) if "sub-02" in k and "responses.h5" in k])
    assert np.abs(shards - expected).max() <= 1e-6 * np.abs(expected).max()  # shards of 1 vs 2: other batching
