"""Batch jobs: the local engine and the Ray engine (1 and 2 actors) against direct ``encode``/``predict_movie`` calls.

Two jobs through fmri-bold5000-resnet18 (untrained backbone, whole brain, CPU): N 224x224 PNG images x subjects 1
and 2 (shards of N/4), and three synthetic films x subject 1 (2 Hz, TR 2 s). Each variant writes to a fresh output
root; variants are interleaved and the best of REPEATS is kept. The Ray cluster (2 CPUs, 127.0.0.1) is started
once before the clock; actor start-up and model loading are inside each Ray run, as a user sees them. Peak memory
is that of a local-engine run in its own process, for a job of U and of 4U image units.
``--shared``: the same job for three subjects and for one, each backbone pass shared by the three. ``--scale``:
Ray's overhead on a job of a minute or more of local-engine work, equal workers.
Run ``python scripts/bench_batch.py [--quick | --shared]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import berg
import berg.batch
from berg.video import write_synthetic_video

MODEL = "fmri-bold5000-resnet18"
REPEATS = 2
RAY_1 = {"actors": 1, "cpus_per_actor": 1, "cpus_per_decode": 1, "decode_tasks": 1}
RAY_2 = {"actors": 2, "cpus_per_actor": 0.5, "cpus_per_decode": 0.5, "decode_tasks": 1}


def make_stimuli(folder: Path, n_images: int, film_s: float) -> tuple[list[Path], list[Path]]:
    """``n_images`` random PNGs and three films of ``film_s`` seconds (10 frames/s, 160x120)."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n_images):
        images.append(folder / "images" / f"im{i:05d}.png")
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(images[-1])
    films = []
    for k in range(3):
        films.append(write_synthetic_video(folder / f"film{k}.mp4", int(film_s * 10), 10.0, (120, 160),
                                           lambda i, k=k: np.full((120, 160, 3), (7 * i + 40 * k) % 256, np.uint8)))
    return images, films


def jobs(folder: Path, berg_dir: Path, n_images: int) -> dict[str, dict]:
    common = {"model": MODEL, "device": "cpu", "backbone_weights": "untrained"}
    return {"images": {"berg_dir": str(berg_dir), "rows": [
                {"stimuli": str(folder / "images"), "subjects": [1, 2], "shard_size": max(1, n_images // 4),
                 **common}]},
            "films": {"berg_dir": str(berg_dir), "rows": [
                {"stimuli": str(folder / "film*.mp4"), "subjects": [1], "tr": 2.0, **common}]}}


def _direct(kind: str, folder: Path, berg_dir: Path, out: Path) -> None:
    for subject in ([1, 2] if kind == "images" else [1]):
        model = berg.get_encoding_model(MODEL, subject=subject, device="cpu", backbone_weights=None,
                                        berg_dir=berg_dir)
        if kind == "images":
            berg.encode(model, sorted(str(p) for p in (folder / "images").glob("*.png")), show_progress=False)
        else:
            for film in sorted(folder.glob("film*.mp4")):
                berg.predict_movie(model, film, tr=2.0, show_progress=False, output=out / f"{film.stem}.h5")


def _timed_run(variant: str, kind: str, job: dict, folder: Path, berg_dir: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    if variant == "direct":
        _direct(kind, folder, berg_dir, out)
    else:
        ray = {"ray 1 actor": RAY_1, "ray 2 actors": RAY_2}.get(variant)
        result = berg.batch.run({**job, "output": str(out), **({"ray": ray} if ray else {})},
                                engine="ray" if ray else "local", show_progress=False)
        assert result.ok and result.n_skipped == 0, result.failures
    return time.perf_counter() - started


def peak_rss(folder: Path, berg_dir: Path, n_units: int) -> float:
    """Peak RSS (MiB) of a fresh process running a local job of ``n_units`` image shards (10 images each)."""
    out = folder / f"rss{n_units}"
    shutil.rmtree(out, ignore_errors=True)
    files = sorted(str(p) for p in (folder / "images").glob("*.png"))
    stimuli = (files * (10 * n_units // len(files) + 1))[: 10 * n_units]
    links = folder / f"rss{n_units}_images"
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir()
    for i, path in enumerate(stimuli):
        (links / f"im{i:05d}.png").symlink_to(path)
    job = {"output": str(out), "berg_dir": str(berg_dir), "rows": [
        {"stimuli": str(links), "model": MODEL, "subjects": [1], "shard_size": 10, "device": "cpu",
         "backbone_weights": "untrained"}]}
    script = ("import json, sys; sys.path.insert(0, %r); import berg.batch; from benchutil import peak_rss_mb; "
              "berg.batch.run(json.loads(%r), show_progress=False); print(peak_rss_mb())"
              % (str(Path(__file__).parent), json.dumps(job)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False, berg_dir: Path | None = None, n_images: int | None = None, film_s: float | None = None,
        rss_units: int | None = None) -> dict:
    """Time every variant on both jobs; return seconds, throughputs, Ray/local ratios and peak RSS."""
    import ray

    n_images = n_images or (20 if quick else 200)
    film_s = film_s or (4.0 if quick else 20.0)
    rss_units = rss_units or (2 if quick else 5)
    with tempfile.TemporaryDirectory(prefix="berg-bench-batch-") as tmp:
        folder = Path(tmp)
        if berg_dir is None:
            from berg.storage.img2fmri import import_img2fmri

            berg_dir = folder / "berg_dir"
            import_img2fmri(berg_dir)
        make_stimuli(folder, n_images, film_s)
        started = not ray.is_initialized()  # the test suite's cluster, or one of our own
        if started:
            ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        try:
            variants = ("direct", "local", "ray 1 actor", "ray 2 actors")
            times: dict = {(k, v): [] for k in ("images", "films") for v in variants}
            for _ in range(1 if quick else REPEATS):
                for kind, job in jobs(folder, berg_dir, n_images).items():
                    for variant in variants:
                        times[kind, variant].append(_timed_run(variant, kind, job, folder, berg_dir, folder / "out"))
        finally:
            if started:
                ray.shutdown()
        rss = {f"{u} units": peak_rss(folder, berg_dir, u) for u in (rss_units, 4 * rss_units)}
    best = {f"{k} / {v}": min(t) for (k, v), t in times.items()}
    items = {"images": 2 * n_images, "films": 3 * int(film_s * 2)}
    return {"n_images": n_images, "film_s": film_s, "seconds": best,
            "items_per_s": {key: items[key.split(" / ")[0]] / s for key, s in best.items()},
            "ray_over_local": {f"{k} / {v}": best[f"{k} / {v}"] / best[f"{k} / local"]
                               for k in ("images", "films") for v in ("ray 1 actor", "ray 2 actors")},
            "local_over_direct": {k: best[f"{k} / local"] / best[f"{k} / direct"] for k in ("images", "films")},
            "peak_rss_mib": rss, "rss_growth": rss[f"{4 * rss_units} units"] / rss[f"{rss_units} units"]}


def shared_backbone(n_images: int = 64, film_s: float = 60.0, berg_dir: Path | None = None, repeats: int = 3
                    ) -> dict:
    """The same local-engine job for img2fmri's three subjects and for subject 1 alone: ``n_images`` photos and
    one ``film_s`` s film (2 Hz, TR 2 s). Interleaved, best of ``repeats``, each run into a fresh output root; the
    three subjects share each backbone pass (:mod:`berg.batch.grouping`)."""
    from benchutil import best_of

    with tempfile.TemporaryDirectory(prefix="berg-bench-shared-") as tmp:
        folder = Path(tmp)
        if berg_dir is None:
            from berg.storage.img2fmri import import_img2fmri

            berg_dir = folder / "berg_dir"
            import_img2fmri(berg_dir)
        _, films = make_stimuli(folder, n_images, film_s)
        common = {"model": MODEL, "device": "cpu", "backbone_weights": "untrained"}

        def job(subjects: list[int]):
            out = folder / f"out-{len(subjects)}"
            shutil.rmtree(out, ignore_errors=True)
            rows = [{"stimuli": str(folder / "images"), "subjects": subjects, **common},
                    {"stimuli": str(films[0]), "subjects": subjects, "tr": 2.0, **common}]
            result = berg.batch.run({"output": str(out), "berg_dir": str(berg_dir), "rows": rows},
                                    show_progress=False)
            assert result.ok, result.failures
            return result

        t = best_of({"1 subject": lambda: job([1]), "3 subjects": lambda: job([1, 2, 3])}, repeats=repeats)
    return {"scenario": "batch job, img2fmri subjects 1-3 vs subject 1", "n_images": n_images, "film_s": film_s,
            "seconds": t, "ratio": t["3 subjects"] / t["1 subject"], "ratio_meaning": "3 subjects / 1 subject",
            "target": "<= 1.3"}


def ray_at_scale(n_images: int = 1800, shard_size: int = 100, berg_dir: Path | None = None, repeats: int = 2
                 ) -> dict:
    """Ray's overhead where it matters: a local-engine job of about a minute or more (``n_images`` photos x subject
    1 in shards of ``shard_size``) against the same job on one Ray actor, equal workers (both run torch on the
    same 2 threads: ``OMP_NUM_THREADS=2`` for the cluster), the cluster started before the clock. Interleaved, best
    of ``repeats``; actor start-up and model loading are inside the Ray runs."""
    import os

    import ray

    with tempfile.TemporaryDirectory(prefix="berg-bench-ray-") as tmp:
        folder = Path(tmp)
        if berg_dir is None:
            from berg.storage.img2fmri import import_img2fmri

            berg_dir = folder / "berg_dir"
            import_img2fmri(berg_dir)
        make_stimuli(folder, n_images, 1.0)
        job = {"berg_dir": str(berg_dir), "rows": [{"stimuli": str(folder / "images"), "model": MODEL,
                                                    "subjects": [1], "shard_size": shard_size, "device": "cpu",
                                                    "backbone_weights": "untrained"}]}
        os.environ.setdefault("OMP_NUM_THREADS", "2")
        ray.init(num_cpus=3, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        settings = {"actors": 1, "cpus_per_actor": 2, "cpus_per_decode": 1, "decode_tasks": 1}
        times: dict[str, list[float]] = {"local": [], "ray 1 actor": []}
        try:
            for _ in range(repeats):
                for variant in times:
                    out = folder / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    started = time.perf_counter()
                    result = berg.batch.run({**job, "output": str(out),
                                             **({"ray": settings} if variant != "local" else {})},
                                            engine="local" if variant == "local" else "ray", show_progress=False)
                    times[variant].append(time.perf_counter() - started)
                    assert result.ok and result.n_done == result.n_units, result.failures
        finally:
            ray.shutdown()
    best = {k: min(v) for k, v in times.items()}
    return {"scenario": "Ray at scale", "n_images": n_images, "units": -(-n_images // shard_size),
            "seconds": best, "all_seconds": times, "ratio": best["ray 1 actor"] / best["local"],
            "ratio_meaning": "Ray (1 actor, 2 threads) / local engine", "target": "<= 1.15",
            "images_per_s_per_actor": n_images / best["ray 1 actor"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shared", action="store_true", help="only the shared-backbone scenario (3 subjects vs 1)")
    parser.add_argument("--scale", action="store_true", help="only Ray's overhead on a job of a minute or more")
    args = parser.parse_args()
    result = shared_backbone() if args.shared else ray_at_scale() if args.scale else run(args.quick)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
