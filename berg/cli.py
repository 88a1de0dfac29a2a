"""The ``berg`` command line: list, info, encode (and the commands of the other modules)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import api
from ._io import atomic_path
from .encoder import encode
from .errors import BergError, InvalidArgumentError
from .registry import format_catalog
from .sinks import write_columns
from .spaces import to_nifti

OUTPUT_SUFFIXES = (".npy", ".h5", ".hdf5", ".nii", ".nii.gz")


def _backbone_weights(value: str | None):
    return None if value in (None, "untrained") else value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by commands that build an encoding model."""
    parser.add_argument("model", help="model id (see `berg list`)")
    parser.add_argument("--subject", required=True, help="subject number (or 'group' where offered)")
    parser.add_argument("--roi", action="append", help="ROI name; repeat for a union of several (default: whole brain)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--backbone-weights", default="default",
                        help="'default' (torchvision's published weights), a weights file, or 'untrained'")
    parser.add_argument("--no-verify-hash", action="store_true", help="accept a weights file with another hash")
    parser.add_argument("--berg-dir", default=None, help="model files root (default: $BERG_HOME or the user cache)")


def _check_output_suffix(path: Path, what: str) -> None:
    if not path.name.lower().endswith(OUTPUT_SUFFIXES):
        raise InvalidArgumentError(f"{what} {str(path)!r} has an unknown extension; valid: {', '.join(OUTPUT_SUFFIXES)}")


def model_from_args(args: argparse.Namespace):
    """Build the encoding model the shared options describe."""
    try:
        subject = int(args.subject)
    except ValueError:  # "group", or a name the card's subject check rejects with the valid ones
        subject = args.subject
    selection = {"roi": args.roi if len(args.roi or []) != 1 else args.roi[0]} if args.roi else None
    return api.get_encoding_model(args.model, subject=subject, selection=selection, device=args.device,
                                  backbone_weights=_backbone_weights(args.backbone_weights),
                                  verify_hash=not args.no_verify_hash, berg_dir=args.berg_dir)


def encode_to_file(model, stimulus, n_stimuli: int, path: str | Path, show_progress: bool = True,
                   batch_size: int | None = None) -> Path:
    """Encode into ``.npy``, ``.h5``/``.hdf5`` or ``.nii``/``.nii.gz``, written atomically.

    ``.npy`` and HDF5 outputs are filled batch by batch (memory does not grow with the number of stimuli). HDF5
    files hold ``responses`` (n_stimuli, n_outputs) plus ``voxel_ijk``, ``affine``, ``roi_columns/{name}`` and the
    metadata's scalars as attributes.
    """
    path = Path(path)
    _check_output_suffix(path, "output")
    name = path.name.lower()
    shape, metadata = (n_stimuli, model.n_outputs), model.metadata
    with atomic_path(path) as tmp:
        if name.endswith(".npy"):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            encode(model, stimulus, show_progress=show_progress, batch_size=batch_size, out=out)
            out.flush()
            del out
        elif name.endswith((".h5", ".hdf5")):
            import h5py

            with h5py.File(tmp, "w") as h5:
                out = h5.create_dataset("responses", shape=shape, dtype=np.float32,
                                        chunks=(1, shape[1]) if shape[1] > 0 else None)
                encode(model, stimulus, show_progress=show_progress, batch_size=batch_size, out=out)
                write_columns(h5, metadata)
        else:
            responses = encode(model, stimulus, show_progress=show_progress, batch_size=batch_size)
            to_nifti(responses, metadata).to_filename(tmp)
    return path


def _cmd_list(args: argparse.Namespace) -> int:
    print(format_catalog(api.get_model_catalog(berg_dir=args.berg_dir)))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(api.describe(args.model, berg_dir=args.berg_dir), sort_keys=False, width=110).rstrip())
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    output = Path(args.output)
    _check_output_suffix(output, "-o")  # before the model is built
    inputs = args.inputs
    if len(inputs) == 1 and inputs[0].endswith(".npy"):
        stimulus = np.load(inputs[0], mmap_mode="r", allow_pickle=False)
        n_stimuli = stimulus.shape[0] if stimulus.ndim else 0
    else:
        stimulus, n_stimuli = inputs, len(inputs)
    model = model_from_args(args)
    encode_to_file(model, stimulus, n_stimuli, output, show_progress=not args.quiet, batch_size=args.batch_size)
    print(f"wrote {output} ({n_stimuli} stimuli x {model.n_outputs} outputs)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``berg`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="berg", description="A zoo of DNN brain-encoding models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the models in the zoo")
    p.add_argument("--berg-dir", default=None)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="show a model card")
    p.add_argument("model")
    p.add_argument("--berg-dir", default=None)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("encode", help="encode images or videos into in-silico responses")
    add_model_options(p)
    p.add_argument("inputs", nargs="+", help="image files, video files, or one .npy array file")
    p.add_argument("-o", "--output", required=True, help="output file: .npy, .h5 or .nii.gz")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_encode)

    from . import fetch, movie
    from .batch import runner as batch_runner
    from .storage import img2fmri
    from .training import cli as training_cli

    for module in (fetch, img2fmri, movie, training_cli, batch_runner):
        module.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``berg`` command; returns the exit code (2 for a bad input, with the reason)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BergError as exc:
        print(f"berg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
