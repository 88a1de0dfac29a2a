"""Options shared by commands: ``--subject``, ``--berg-dir`` and those that build an encoding model."""

from __future__ import annotations

import argparse

from ..config import PRECISIONS
from ..errors import InvalidArgumentError


def subject_arg(text: str) -> int | str:
    """A ``--subject`` value: a number as int, anything else (``group``) as given, for the card to check."""
    try:
        return int(text)
    except ValueError:
        return text


def add_berg_dir(parser: argparse.ArgumentParser, help: str = "model files root (default: $BERG_HOME or the "
                                                                "user cache)") -> None:
    """``--berg-dir DIR``."""
    parser.add_argument("--berg-dir", default=None, help=help)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``MODEL --subject S`` and every option of :func:`berg.get_encoding_model`."""
    parser.add_argument("model", help="model id (see `berg list`)")
    parser.add_argument("--subject", type=subject_arg, required=True,
                        help="subject number (or 'group' where the model offers it)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--roi", action="append", help="ROI name; repeat for a union of several (default: whole brain)")
    chosen.add_argument("--voxels", metavar="MASK.npy", default=None,
                        help="binary (n_voxels,) voxel mask in a .npy file (default: whole brain)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--backbone-weights", default="default",
                        help="'default' (torchvision's published weights), a weights file, or 'untrained'")
    parser.add_argument("--no-verify-hash", action="store_true", help="accept a weights file with another hash")
    parser.add_argument("--sigma-mm", type=float, default=None,
                        help="--subject group only: Gaussian smoothing sigma in mm (default: the model's)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="backbone autocast dtype")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory layout for the backbone")
    parser.add_argument("--compile", action="store_true", help="run the backbone through torch.compile")
    add_berg_dir(parser)


def _selection(args: argparse.Namespace) -> dict | None:
    if args.roi:
        return {"roi": args.roi if len(args.roi) != 1 else args.roi[0]}
    if args.voxels is not None:
        import numpy as np

        try:
            return {"voxels": np.load(args.voxels, allow_pickle=False)}
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"--voxels {args.voxels!r} is not readable as a .npy array ({exc}); "
                                       "give a binary (n_voxels,) array saved with numpy.save") from exc
    return None


def model_from_args(args: argparse.Namespace):
    """The encoding model the options of :func:`add_model_options` describe (loads torch)."""
    from .. import api

    weights = None if args.backbone_weights == "untrained" else args.backbone_weights
    return api.get_encoding_model(args.model, subject=args.subject, selection=_selection(args), device=args.device,
                                  backbone_weights=weights, verify_hash=not args.no_verify_hash,
                                  berg_dir=args.berg_dir, sigma_mm=args.sigma_mm, precision=args.precision,
                                  channels_last=args.channels_last, compile=args.compile)
