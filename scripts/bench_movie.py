"""Benchmark of berg.movie.predict_movie: peak memory against film length, and throughput against the backbone.

1. Peak RSS: synthetic 720p videos of two lengths (5 and 30 min; 1 and 6 min with ``--quick``) each go through
   ``predict_movie`` in a fresh process with a cheap encoder (1000 outputs: a fixed random map of an 8x8 thumbnail),
   sampled at 2 Hz, TR 2 s, HDF5 + TSV outputs; the child reports its peak RSS (``VmHWM``).
2. Throughput: the image model ``fmri-bold5000-resnet18`` (group MNI, 9641 outputs; untrained ResNet-18, as
   pretrained weights may not be fetchable) through ``predict_movie`` on 720p films at 2 Hz, against
   ``berg.encode`` on the same frames already decoded in memory, and against decoding alone (decode, sample at
   2 Hz, baselines: what the decoding thread does before the model), with and without letting the decoder drop
   the frames no sample needs. Two films: I- and P-frames only at 10 frames/s (nothing can be dropped), and coded
   as films are, with B-frames at 24 frames/s. Interleaved, best of three. The limit on a CPU: decoding and the
   model share the cores, so at best ``predict_movie / encode = encode CPU-s / (encode CPU-s + decode CPU-s)``.

Usage: ``python scripts/bench_movie.py [--quick] [--part rss|speed|all] [--json OUT] [--device auto|cpu|cuda]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import best_of, cpu_seconds, device_name, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from berg.video import iter_frames, probe, write_synthetic_video  # noqa: E402

SIZE = (720, 1280)
FPS = 10.0
FILMS = {"I/P frames, 10 frames/s": {"fps": FPS, "b_frames": 0},
         "B-frames, 24 frames/s": {"fps": 24.0, "b_frames": 3}}


def make_video(path: Path, seconds: float, fps: float = FPS, size=SIZE, b_frames: int = 0) -> Path:
    """A scrolling colour gradient with a white bar, ``seconds`` long, written once and reused."""
    if path.exists():
        return path
    h, w = size
    x = np.linspace(0, 1, 2 * w)
    base = np.stack([np.tile(x * 255, (h, 1)), np.tile((1 - x) * 255, (h, 1)),
                     np.tile(np.linspace(0, 255, h)[:, None], (1, 2 * w))], axis=-1).astype(np.uint8)

    def frame(i: int) -> np.ndarray:
        shift = (7 * i) % w
        image = base[:, shift:shift + w].copy()
        image[:, (13 * i) % w:(13 * i) % w + 40] = 255
        return image

    return write_synthetic_video(path, int(round(seconds * fps)), fps, size, frame, b_frames=b_frames)


class CheapModel:
    """Image model interface with ``n_outputs`` outputs: a fixed random map of an 8x8 RGB thumbnail (strided pixels)."""

    stimulus_kind, n_frames = "image", None  # what berg.movie.MovieModel asks for

    def __init__(self, n_outputs: int = 1000):
        self.n_outputs = n_outputs
        self.weight = np.random.default_rng(0).standard_normal((192, n_outputs)).astype(np.float32) / 100
        self.metadata = {"model_id": "cheap", "subject": 1, "units": "arbitrary",
                         "roi_columns": {"first": np.arange(100), "all": np.arange(n_outputs)}}

    def stage(self, batch: np.ndarray) -> np.ndarray:
        return batch

    def predict_staged(self, staged, *, flush_after_s=None):  # answers each batch at once
        for batch in staged:
            b, h, w, _ = batch.shape
            thumb = batch[:, h // 16::h // 8, w // 16::w // 8][:, :8, :8]
            yield (thumb.reshape(b, 192) / 255.0).astype(np.float32) @ self.weight


def child(video: str, out_dir: str) -> dict:
    """Run predict_movie once in this process; return timings and peak RSS."""
    from berg.movie import predict_movie

    model = CheapModel()
    before = peak_rss_mb()
    t0 = time.perf_counter()
    result = predict_movie(model, video, tr=2.0, sample_rate_hz=2.0, show_progress=False,
                           output=[Path(out_dir) / "pred.h5", Path(out_dir) / "pred.tsv"])
    wall = time.perf_counter() - t0
    return {"video_s": probe(video).duration_s, "n_samples": int(result.sample_times.size),
            "n_scans": int(result.frame_times.size), "wall_s": wall, "rss_before_mib": before,
            "peak_rss_mib": peak_rss_mb()}


def rss_part(quick: bool, work: Path, minutes: tuple[float, float] | None = None) -> dict:
    """Peak RSS of predict_movie on two film lengths (minutes), each in a fresh process."""
    minutes = minutes or ((1, 6) if quick else (5, 30))
    runs = {}
    for m in minutes:
        video = make_video(work / f"synthetic_720p_{m}min.mp4", 60.0 * m)
        out = work / f"out_{m}"
        out.mkdir(exist_ok=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(video), str(out)], capture_output=True,
                              text=True, check=True)
        runs[f"{m}min"] = json.loads(proc.stdout.strip().splitlines()[-1])
    short, long = (runs[f"{m}min"]["peak_rss_mib"] for m in minutes)
    return {"runs": runs, "rss_growth": long / short - 1.0, "frames_per_s_decoded": {
        k: v["video_s"] * FPS / v["wall_s"] for k, v in runs.items()}}


def speed_part(quick: bool, work: Path, seconds: float | None = None, device: str = "auto") -> dict:
    """Per film of :data:`FILMS`: samples/s of predict_movie, of encode on the same frames in memory and of
    decoding alone with and without dropping unneeded frames (interleaved), and the CPU-time limit."""
    import torch

    import berg
    from berg.baselines import compute
    from berg.movie import predict_movie
    from berg.storage.img2fmri import import_img2fmri

    berg_dir = work / "berg_dir"
    import_img2fmri(berg_dir)  # once; the img2fmri wheel comes from pip's cache or PyPI
    model = berg.get_encoding_model("fmri-bold5000-resnet18", subject="group", device=device, backbone_weights=None,
                                    berg_dir=berg_dir)
    seconds = seconds or (10.0 if quick else 30.0)
    names = ("brightness", "luminance")
    out = {"device": device_name(model.device), "torch_threads": torch.get_num_threads(), "video_s": seconds,
           "films": {}}
    for film, coding in FILMS.items():
        video = make_video(work / f"synthetic_720p_{int(seconds)}s_{coding['fps']:g}fps_b{coding['b_frames']}.mp4",
                           seconds, **coding)
        frames = np.stack([f for _, f in iter_frames(video, rate_hz=2.0)])
        result = {}

        def movie():
            result["movie"] = predict_movie(model, video, tr=2.0, sample_rate_hz=2.0, batch_size=16,
                                            show_progress=False, baselines=names)

        def decoding(drop: bool):  # what predict_movie's decoding thread does before the model
            return lambda: [compute(names, frame[None], is_clip=False)
                            for _, frame in iter_frames(video, rate_hz=2.0, drop_unneeded=drop)]

        sides = {"encode": lambda: berg.encode(model, frames, batch_size=16, show_progress=False), "movie": movie,
                 "decode": decoding(True), "decode every frame": decoding(False)}
        t = best_of(sides, repeats=2 if quick else 3)
        cpu = {name: cpu_seconds(sides[name]) for name in ("encode", "decode")}
        n = int(result["movie"].sample_times.size)
        out["films"][film] = {
            "n_samples": n, "decode_only_samples_per_s": n / t["decode"],
            "decode_every_frame_samples_per_s": n / t["decode every frame"],
            "encode_in_memory_samples_per_s": n / t["encode"], "predict_movie_samples_per_s": n / t["movie"],
            "predict_movie_vs_encode": t["encode"] / t["movie"], "encode_cpu_s": cpu["encode"],
            "decode_cpu_s": cpu["decode"], "cpu_limit": cpu["encode"] / (cpu["encode"] + cpu["decode"])}
    return out


def run(quick: bool = False, part: str = "all", work_dir: str | None = None, device: str = "auto") -> dict:
    """Run the benchmark; return its figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="berg-bench-movie-") as tmp:
        work = Path(work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        out = {"quick": quick}
        if part in ("rss", "all"):
            out["rss"] = rss_part(quick, work)
        if part in ("speed", "all"):
            out["speed"] = speed_part(quick, work, device=device)
        return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=["rss", "speed", "all"], default="all")
    parser.add_argument("--work-dir", default=None, help="keep (and reuse) the synthetic videos here")
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (decoding stays on the CPU)")
    args = parser.parse_args()
    figures = run(args.quick, args.part, args.work_dir, args.device)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
