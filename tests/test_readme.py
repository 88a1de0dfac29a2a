"""The README's Python examples run as written, in order, in one namespace (all but those marked as needing the
network or files a user brings)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from berg.video import write_synthetic_video

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(<!-- (?:needs network|not run)[^\n]*-->\n)?```python\n(.*?)```", re.S)


def readme_blocks() -> list[tuple[bool, str]]:
    """(skipped, code) of every Python block of the README; blocks marked as needing network or files are skipped."""
    return [(bool(m.group(1)), m.group(2)) for m in _BLOCK.finditer(README.read_text())]


@pytest.mark.slow  # every README example, films included
def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = readme_blocks()
    runnable = [code for needs_network, code in blocks if not needs_network]
    assert len(blocks) >= 3 and len(runnable) >= 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BERG_OFFLINE", "1")
    colours = np.random.default_rng(0).integers(0, 256, (40, 1, 1, 3), dtype=np.uint8)
    write_synthetic_video("film.mp4", 40, 10.0, (48, 64), lambda i: np.broadcast_to(colours[i], (48, 64, 3)).copy())
    namespace: dict = {}
    for code in runnable:
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["result"].bold.shape[1] == namespace["model"].n_outputs
    assert {"pred.nii.gz", "pred.h5", "pred.tsv"} <= {p.name for p in tmp_path.iterdir()}


def test_ci_runs_the_readme_set_up_and_test_commands():
    section = README.read_text().split("## Set up", 1)[1]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    ci_lines = (README.parent / ".ci" / "run").read_text().splitlines()
    assert commands == ['python -m pip install -e ".[dev]" && berg import-img2fmri', "python -m pytest -q"]
    assert all(command in ci_lines for command in commands), commands
