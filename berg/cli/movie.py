"""``berg movie MODEL VIDEO --subject S --tr TR -o OUT ...``: predicted BOLD of a film at the scanner's TR."""

from __future__ import annotations

import argparse

from .options import add_model_options, model_from_args

HRFS = ("spm", "glover", "none")


def _movie(args: argparse.Namespace) -> int:
    from ..movie import predict_movie

    model = model_from_args(args)
    options = {} if args.baseline is None else {"baselines": tuple(args.baseline)}  # else the library's default
    result = predict_movie(model, args.video, tr=args.tr, n_scans=args.n_scans, slice_time_ref=args.slice_time_ref,
                           hrf=None if args.hrf == "none" else args.hrf, sample_rate_hz=args.rate or None,
                           clip_s=args.clip_s, stride_s=args.stride_s, batch_size=args.batch_size, output=args.output,
                           resume=args.resume, show_progress=not args.quiet, **options)
    for path in result.outputs:
        print(path)
    return 0


def register(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``movie`` (with the model options of ``encode``)."""
    p = subparsers.add_parser("movie", parents=[common], help="predict BOLD time series for a film at a given TR",
                              description="Stream a video through an encoding model into predicted BOLD at the TR.")
    add_model_options(p)
    p.add_argument("video", help="video file")
    p.add_argument("--tr", type=float, required=True, help="repetition time (s)")
    p.add_argument("-o", "--output", action="append", required=True,
                   help="output file, kind by extension (.nii/.nii.gz, .h5/.hdf5, .tsv/.tsv.gz); repeat for several")
    p.add_argument("--n-scans", type=int, default=None, help="number of scans (default: duration / TR)")
    p.add_argument("--slice-time-ref", type=float, default=0.0, help="acquisition time within the TR, in [0, 1]")
    p.add_argument("--hrf", choices=HRFS, default="spm", help="haemodynamic response kernel (default: spm)")
    p.add_argument("--rate", type=float, default=2.0, help="image models: frames sampled per second (0 = every frame)")
    p.add_argument("--clip-s", type=float, default=3.0, help="video models: clip length (s)")
    p.add_argument("--stride-s", type=float, default=None, help="video models: clip stride (s), default the TR")
    p.add_argument("--batch-size", type=int, default=None, help="samples per forward pass (default: the model's)")
    p.add_argument("--baseline", action="append", default=None,
                   help="low-level baseline to compute: brightness or luminance; repeat for several "
                        "(default: both; --no-baselines for none)")
    p.add_argument("--no-baselines", dest="baseline", action="store_const", const=[],
                   help="compute no low-level baseline")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same outputs")
    p.set_defaults(run=_movie)
