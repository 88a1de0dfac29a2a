"""Encoding needs no extra: with every optional package blocked, a model loads and encodes images and a film."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# the optional packages (extras plot, train, import, ray, dev) and the ones the runtime dropped
BLOCKED = ("sklearn", "himalaya", "pandas", "fsl", "moto", "matplotlib", "nilearn", "ray", "psutil")

# a None entry in sys.modules is how Python marks a module as absent: ``import`` raises ModuleNotFoundError and
# ``importlib.util.find_spec`` answers None, as for a package that is not installed (torch probes with the latter)
_BLOCKER = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
sys.path.insert(0, {str(TESTS)!r})
"""


def _run(script: str) -> dict:
    """Run ``script`` after the import blocker in a fresh interpreter; return the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", _BLOCKER + script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_blocker_blocks():
    """The check below would pass vacuously if the blocker let these through."""
    out = _run("import importlib, json\n"
               "failed = []\n"
               f"for name in {BLOCKED!r} + ('matplotlib.figure', 'sklearn.linear_model'):\n"
               "    try:\n"
               "        importlib.import_module(name)\n"
               "    except ImportError:\n"
               "        failed.append(name)\n"
               "print(json.dumps(failed))")
    assert set(out) == set(BLOCKED) | {"matplotlib.figure", "sklearn.linear_model"}


@pytest.mark.slow  # a fresh interpreter imports torch and runs ResNet-18
def test_encoding_and_films_need_no_extra(tmp_path):
    out = _run(f"""
import json
from pathlib import Path
import numpy as np
from _support import write_test_model
import berg
from berg.movie import predict_movie
from berg.video import write_synthetic_video

berg_dir = Path({str(tmp_path)!r})
raw = write_test_model(berg_dir, n_voxels=30, n_components=4, subjects=(1,))
model = berg.get_encoding_model("test-resnet18", subject=1, berg_dir=berg_dir, backbone_weights=None, device="cpu")
images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
responses = berg.encode(model, images, show_progress=False)
film = write_synthetic_video(berg_dir / "film.mp4", 20, 10.0, (32, 32),
                             lambda i: np.full((32, 32, 3), 12 * i, np.uint8))
result = predict_movie(model, film, tr=1.0, sample_rate_hz=2.0, show_progress=False)
print(json.dumps({{"shape": list(responses.shape), "finite": bool(np.isfinite(responses).all()),
                  "bold": list(np.shape(result.bold)), "spread": float(np.ptp(responses, axis=0).max())}}))
""")
    assert out["shape"] == [2, 30] and out["finite"] and out["spread"] > 0
    assert out["bold"][1] == 30 and out["bold"][0] >= 1


@pytest.mark.slow  # a fresh interpreter imports torch (berg.training)
def test_plotting_leaves_pyplot_and_the_backend_alone(tmp_path):
    """Figures go through ``matplotlib.figure.Figure``: pyplot is never imported, the backend never changed."""
    script = f"""
import json, sys
import numpy as np
import matplotlib
switches = []
matplotlib.use = lambda *args, **kwargs: switches.append(args)  # get_backend() would import pyplot itself
from berg.analysis import plot_similarity
from berg.training.report import write_report
fig = plot_similarity(np.eye(4), tr=2.0)
rng = np.random.default_rng(0)
write_report({str(tmp_path)!r}, {{"correlation": rng.uniform(0, 1, 20), "noise_ceiling": rng.uniform(0, 1, 20)}},
             {{"a": np.arange(5)}}, np.zeros((20, 3), int), (4, 4, 4), np.eye(4), mni=False)
print(json.dumps({{"pyplot": "matplotlib.pyplot" in sys.modules, "switches": switches, "axes": len(fig.axes)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"pyplot": False, "switches": [], "axes": 2}  # the matrix and its colour bar
    assert {p.name for p in tmp_path.iterdir()} == {"summary.json", "histograms.png", "r_vs_noise_ceiling.png"}


EXTRA_CALLS = {  # what is called -> the extra its message must name
    "from berg.analysis import plot_similarity; plot_similarity(np.eye(3))": "plot",
    "from berg.training.report import write_report; write_report(folder + '/report', {'correlation': np.ones(3)}, "
    "{}, np.zeros((3, 3), int), (2, 2, 2), np.eye(4), mni=False)": "train",
    "from berg.training import train; from _support import feature_dataset; "
    "train(feature_dataset(folder + '/data')[0], folder + '/trained')": "train",
    "from berg.mni import fnirt_t1_voxels; fnirt_t1_voxels(None, None, np.eye(4), None)": "import",
}


def test_a_missing_extra_is_named(tmp_path):
    out = _run(f"""
import json
import numpy as np
from berg.errors import OptionalDependencyError
folder = {str(tmp_path)!r}
messages = {{}}
for call in {list(EXTRA_CALLS)!r}:
    try:
        exec(call)
    except OptionalDependencyError as exc:
        messages[call] = str(exc)
print(json.dumps(messages))
""")
    assert set(out) == set(EXTRA_CALLS)
    assert all(f'pip install "berg[{EXTRA_CALLS[call]}]"' in message for call, message in out.items())
    assert not (tmp_path / "trained").exists()  # and train wrote nothing
