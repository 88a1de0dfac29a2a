"""``berg batch JOB``: many stimuli x models x subjects, resumable, locally or on Ray."""

from __future__ import annotations

import argparse
import sys


def _batch(args: argparse.Namespace) -> int:
    from ..batch.runner import run

    result = run(args.job, engine=args.engine, address=args.address, actors=args.actors, num_gpus=args.num_gpus,
                 show_progress=not args.quiet, command=args.command_line, verify=args.verify)
    print(f"{result.n_units} units: {result.n_skipped} already done, {result.n_done} done now, "
          f"{len(result.failures)} failed; outputs in {result.output}", file=sys.stderr)
    for row in result.failures:
        print(f"failed: {row['unit']} ({row['error_type']}: {row['message']})", file=sys.stderr)
    return 0 if result.ok else 1


def register(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``batch``."""
    p = subparsers.add_parser("batch", parents=[common],
                              help="run a batch job (many stimuli x models x subjects), resumable",
                              description="Run a YAML or TSV batch job; finished units are skipped on a re-run. "
                                          "Exit status 1 when a unit failed (see logs/failures.tsv).")
    p.add_argument("job", help="job file (.yaml, .yml or .tsv)")
    p.add_argument("--engine", default="local", help="local (default) or ray")
    p.add_argument("--address", default=None, help="Ray cluster address (ray://host:10001); default: local")
    p.add_argument("--actors", type=int, default=None, help="Ray: encoder actors (default: the job's, else 1)")
    p.add_argument("--num-gpus", type=float, default=None, help="Ray: GPUs per encoder actor")
    p.add_argument("--verify", action="store_true",
                   help="re-hash the outputs of finished units (default: compare their size and mtime)")
    p.set_defaults(run=_batch)
