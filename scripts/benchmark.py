"""berg's benchmark suite: every scenario against its anchor or its limit, in one run.

    python scripts/benchmark.py [--quick] [--scenarios readout group encode movie load training batch] [--json PATH]
                                [--device cpu|cuda]

Prints a table (device, time, throughput, every ratio with its target and a pass/MISS mark, peak RSS) and writes
the rows as JSON (default ``bench_results/benchmark.json``), each naming the device it ran on. A scenario whose
module is missing is skipped with a message. Every ratio compares sides measured in the same run, interleaved,
best of three; compare ratios, not absolute times, across machines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import cpu_name, meets, peak_rss_mb  # noqa: E402


def _readout(quick: bool, device: str) -> list[dict]:
    rows = importlib.import_module("bench_readout").run(quick)
    rows[0]["target"] = "> 1"
    return rows


def _group(quick: bool, device: str) -> list[dict]:
    r = importlib.import_module("bench_img2fmri").run(quick, device=device)
    common = {"scenario": "group MNI per frame", "device": r["device"],
              "size": f"{r['overlap_voxels']} overlap voxels, map {r['map_shape'][0]} x {r['map_shape'][1]} float32, "
                      f"batch {r['frames']['berg_batch']}"}
    return [{**common, "variant": "berg (folded map + z-score)", "seconds": r["berg_group_mni_ms_per_frame"] / 1e3,
             "ratio": r["speedup"], "ratio_meaning": "img2fmri subject-space stage / berg", "target": ">= 1000"},
            {**common, "variant": "berg (folded map + z-score)", "seconds": r["berg_group_mni_ms_per_frame"] / 1e3,
             "ratio": r["berg_vs_floor"], "ratio_meaning": "berg / bare matmul of the same shape (floor)",
             "target": "<= 1.2"},
            {**common, "variant": "bare torch.mm floor", "seconds": r["matmul_floor_ms_per_frame"] / 1e3},
            {**common, "variant": "img2fmri subject space, its way", "seconds": r["img2fmri_subject_space_ms_per_frame"] / 1e3}]


def _encode(quick: bool, device: str) -> list[dict]:
    return importlib.import_module("bench_encode").run(quick, device=device)


def _movie(quick: bool, device: str) -> list[dict]:
    r = importlib.import_module("bench_movie").run(quick, device=device)
    s, runs = r["speed"], r["rss"]["runs"]
    rows = []
    for film, f in s["films"].items():
        common = {"scenario": "movie", "device": s["device"],
                  "size": f"{s['video_s']:.0f} s 720p synthetic film ({film}), 2 Hz"}

        def row(variant: str, per_s: float, **extra) -> dict:
            return {**common, "variant": variant, "seconds": f["n_samples"] / per_s,
                    "throughput": f"{per_s:.1f} frames/s", **extra}

        rows += [row(f"predict_movie, group MNI ({film})", f["predict_movie_samples_per_s"],
                     ratio=f["predict_movie_vs_encode"], target=">= 0.9",
                     ratio_meaning="predict_movie frames/s / in-memory encode frames/s"),
                 {**common, "variant": "limit when decoding and the model share the cores", "seconds": f["decode_cpu_s"],
                  "ratio": f["cpu_limit"], "ratio_meaning": "encode CPU-s / (encode CPU-s + decode CPU-s); "
                                                            "time: decode CPU-s"},
                 row("encode on the same frames in memory", f["encode_in_memory_samples_per_s"]),
                 row("decoding alone (decode, sample, baselines; no model), dropping unneeded frames",
                     f["decode_only_samples_per_s"], ratio=f["decode_only_samples_per_s"]
                     / f["decode_every_frame_samples_per_s"], ratio_meaning="speed-up over decoding every frame"),
                 row("decoding alone, every frame decoded", f["decode_every_frame_samples_per_s"])]
    lengths = list(runs)
    for length in lengths:
        rows.append({"scenario": "movie memory", "variant": f"predict_movie, {length} film",
                     "seconds": runs[length]["wall_s"], "peak_rss_mb": runs[length]["peak_rss_mib"] * 1.048576})
    rows[-1].update(ratio=1 + r["rss"]["rss_growth"], ratio_meaning=f"peak RSS {lengths[-1]} / {lengths[0]}",
                    target="< 1.2")
    return rows


def _load(quick: bool, device: str) -> list[dict]:
    r = importlib.import_module("bench_load").run(quick)
    size = f"{r['legacy_bytes'] / 1e9:.2f} GB pickles, {r['native_bytes'] / 1e9:.2f} GB native"
    return [{"scenario": "cold model load", "variant": "native, memory-mapped, every page read",
             "seconds": r["native_mmap_s"], "ratio": r["ratio_mmap"], "size": size,
             "ratio_meaning": "BERG np.load(allow_pickle) time / native time", "target": ">= 5"},
            {"scenario": "cold model load", "variant": "native, readout ready to encode (pages read on first use)",
             "seconds": r["native_ready_s"], "ratio": r["ratio_ready"], "size": size,
             "ratio_meaning": "BERG np.load(allow_pickle) time / native time", "target": ">= 5"},
            {"scenario": "cold model load", "variant": "BERG pickles, np.load(allow_pickle=True)",
             "seconds": r["legacy_np_load_s"], "size": size},
            {"scenario": "cold model load", "variant": "BERG pickles, berg's safe reader",
             "seconds": r["legacy_safe_s"], "size": size}]


def _training(quick: bool, device: str) -> list[dict]:
    r = importlib.import_module("bench_training").run(quick)
    return [{"scenario": "training", "variant": "berg train (scaler, PCA, per-voxel ridge CV, report)",
             "size": f"{r['n_voxels']:,} voxels, {r['n_train']} stimuli, {r['n_components']} components, "
                     f"{r['n_alphas']} alphas, {r['n_folds']} folds",
             "seconds": r["train"]["seconds"], "peak_rss_mb": r["train"]["peak_rss_gb"] * 1024}]


def _batch(quick: bool, device: str) -> list[dict]:
    r = importlib.import_module("bench_batch").run(quick)
    size = {"images": f"{r['n_images']} images x 2 subjects", "films": f"3 films of {r['film_s']:g} s x 1 subject"}
    rows = [{"scenario": f"batch {key.split(' / ')[0]}", "variant": key.split(" / ")[1], "seconds": seconds,
             "throughput": f"{r['items_per_s'][key]:.1f} items/s", "size": size[key.split(" / ")[0]]}
            for key, seconds in r["seconds"].items()]
    for row in rows:
        key = f"{row['scenario'][6:]} / {row['variant']}"
        if key in r["ray_over_local"]:
            row.update(ratio=r["ray_over_local"][key], ratio_meaning="Ray time / local engine time (target <= 1.2)")
    rows.append({"scenario": "batch memory", "variant": "local engine, 4x the image units",
                 "seconds": 0.0, "peak_rss_mb": max(r["peak_rss_mib"].values()) * 1.048576,
                 "ratio": r["rss_growth"], "ratio_meaning": "peak RSS 4U units / U units (flat: about 1)"})
    return rows


SCENARIOS = {"readout": _readout, "group": _group, "encode": _encode, "movie": _movie, "load": _load,
             "training": _training, "batch": _batch}


def mark(row: dict) -> str:
    """``pass`` or ``MISS`` for a row with a ratio and a target, else ``""``."""
    if "ratio" not in row or "target" not in row:
        return ""
    return "pass" if meets(row["ratio"], row["target"]) else "MISS"


def format_table(rows: list[dict]) -> str:
    """Rows as a Markdown table: every ratio beside its target and a pass/MISS mark, and the device it ran on."""
    lines = ["| scenario | variant | device | time (s) | throughput | ratio | target | mark | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.3g} ({r['ratio_meaning']})" if "ratio" in r else ""
        seconds = r.get("seconds", r.get("seconds_per_batch"))
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        lines.append(f"| {r['scenario']} | {r['variant']} | {r.get('device', '')} | {seconds:.4g} | "
                     f"{r.get('throughput', '')} | {ratio} | {r.get('target', '')} | {mark(r)} | {rss} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole suite in a few minutes")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--json", default="bench_results/benchmark.json", help="where to write the rows")
    parser.add_argument("--device", default="cpu",
                        help="where models run in the group, encode and movie scenarios: cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    rows, failed, started = [], [], time.perf_counter()
    for name in args.scenarios:
        try:
            scenario_rows = SCENARIOS[name](args.quick, args.device)
        except ModuleNotFoundError as exc:
            print(f"[{name}] skipped: {exc}", file=sys.stderr)
            continue
        except Exception:  # the other scenarios' rows are still worth writing; the exit status says it failed
            traceback.print_exc()
            print(f"[{name}] FAILED (rows of the other scenarios are kept)", file=sys.stderr)
            failed.append(name)
            continue
        rows += [{"device": cpu_name(), **row} for row in scenario_rows]  # CPU-only scenarios name the CPU
        print(f"[{name}] done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(format_table(rows))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "device": args.device, "cpu": cpu_name(), "rows": rows,
                               "suite_peak_rss_mb": peak_rss_mb()},
                              indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
