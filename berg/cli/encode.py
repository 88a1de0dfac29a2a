"""``berg encode MODEL INPUTS... -o OUT``: images, videos or a .npy array into in-silico responses."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InvalidStimulusError
from .options import add_model_options, model_from_args


def _stimulus(inputs: list[str]):
    """The stimulus and its count: one ``.npy`` file is read as an array (memory-mapped), else a list of files."""
    if len(inputs) == 1 and inputs[0].endswith(".npy"):
        import numpy as np

        try:
            array = np.load(inputs[0], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # not an array file, truncated, or pickled objects
            raise InvalidStimulusError(f"{inputs[0]!r} cannot be read as a numpy array of images or clips: "
                                       f"{exc}") from exc
        return array, (array.shape[0] if array.ndim else 0)
    return inputs, len(inputs)


def _encode(args: argparse.Namespace) -> int:
    from .. import encoder
    from .._io import check_room
    from ..writers import writer_for

    writer_for(args.output, "responses", parameter="-o")  # the suffix, before the model is built
    stimulus, n_stimuli = _stimulus(args.inputs)
    model = model_from_args(args)
    writer = writer_for(args.output, "responses", model.metadata, parameter="-o")  # and the model's space
    check_room([(Path(args.output), writer.estimate_bytes(args.output, n_stimuli, model.metadata))], "-o")
    options = {"show_progress": not args.quiet, "batch_size": args.batch_size}
    if args.readout_mb is not None:
        options["readout_mb"] = args.readout_mb
    written = writer.write_responses(args.output, (n_stimuli, model.n_outputs), model.metadata,
                                     lambda out: encoder.encode(model, stimulus, out=out, **options))
    print(f"wrote {', '.join(map(str, written))} ({n_stimuli} stimuli x {model.n_outputs} outputs)", file=sys.stderr)
    return 0


def register(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``encode``."""
    p = subparsers.add_parser("encode", parents=[common], help="encode images or videos into in-silico responses")
    add_model_options(p)
    p.add_argument("inputs", nargs="+", help="image files, video files, or one .npy array file")
    p.add_argument("-o", "--output", required=True,
                   help="output file; its extension picks the format: .npy, .h5 or .hdf5, .nii or .nii.gz "
                        "(volume models), .func.gii (surface models: one file per hemisphere)")
    p.add_argument("--batch-size", type=int, default=None, help="stimuli per forward pass (default: the model's)")
    p.add_argument("--readout-mb", type=float, default=None,
                   help="memory bound of a readout batch in MiB (default: 256)")
    p.set_defaults(run=_encode)
