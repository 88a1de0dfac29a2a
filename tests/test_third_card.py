"""A third model is a card and data: trained on AlexNet, served from S3, listed, described, downloaded, encoded.

Nothing in ``berg/`` names this model: the fixture trains it with :mod:`berg.training`, serves its native files
from a loopback S3 server and writes its card into the berg_dir's ``model_cards/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from safetensors.numpy import load_file
from torchvision.models.feature_extraction import create_feature_extractor

import berg
from berg.training import make_synthetic, train, write_dataset
from _support import REPO, free_port, s3_client

MODEL_ID = "fmri-synthetic-alexnet"
NODES = ["features.5", "features.12"]
SIZE = 64
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PREFIX = "zoo/alexnet/"
BUCKET = "third-card-models"  # moto servers of one process share their buckets: a name of its own


def _untrained_alexnet_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """AlexNet features of uint8 (n, 3, SIZE, SIZE) images, with berg's seeded untrained weights (seed 0)."""
    torch.manual_seed(0)
    body = create_feature_extractor(torchvision.models.alexnet(weights=None).eval(), {n: n for n in NODES})
    x = (torch.from_numpy(images).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.inference_mode():
        return {n: v.numpy() for n, v in body(x).items()}


def _template(folder: Path) -> Path:
    card = {
        "model_id": "template-alexnet-small", "description": "AlexNet on 64 x 64 images (test template).",
        "modality": "fmri", "train_dataset": "template", "model": "alexnet", "stimulus": {"kind": "image"},
        "backbone": {"architecture": "alexnet", "weights": "AlexNet_Weights.IMAGENET1K_V1", "return_nodes": NODES},
        "preprocessing": {"resize": [SIZE, SIZE], "crop": None, "mean": MEAN, "std": STD},
        "readout": {"kind": "linear"}, "subjects": [1], "space": {"kind": "MNI152"}, "rois": [],
        "sources": [{"kind": "local"}],
    }
    path = folder / "template.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """Train the AlexNet model, upload its native files to a loopback S3 bucket, and write its card there."""
    from moto.server import ThreadedMotoServer

    work = tmp_path_factory.mktemp("alexnet-training")
    images = np.random.default_rng(5).integers(0, 256, (36, 3, SIZE, SIZE), dtype=np.uint8)
    feats = _untrained_alexnet_features(images)
    flat = np.concatenate([feats[n].reshape(len(images), -1) for n in NODES], axis=1)
    data = make_synthetic(n_train=28, n_test=8, n_voxels=12, test_repeats=(2, 3), features=flat, seed=5)
    spec = write_dataset(data, work / "dataset", name="synthetic", stimuli=images,
                         template=str(_template(work)), backbone_weights=None, model_id=MODEL_ID,
                         fit={"n_components": 6, "n_folds": 3})
    result = train(spec, berg_dir=work / "trained")

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    for path in (p for p in result.model_dir.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, PREFIX + path.relative_to(result.model_dir).as_posix(),
                           ExtraArgs={"ACL": "public-read"})

    berg_dir = tmp_path_factory.mktemp("berg-home")
    card = yaml.safe_load(result.card_path.read_text())
    card.update(format="native", sources=[{"kind": "s3", "bucket": BUCKET, "region": "us-west-2", "prefix": PREFIX,
                                            "endpoint_url": endpoint}])
    (berg_dir / "model_cards").mkdir()
    (berg_dir / "model_cards" / f"{MODEL_ID}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    yield {"berg_dir": berg_dir, "images": images, "result": result}
    server.stop()


def test_third_card_is_listed_described_downloaded_and_encoded(served_model):
    berg_dir, images = served_model["berg_dir"], served_model["images"]
    assert MODEL_ID in berg.list_models(berg_dir=berg_dir)
    entry = berg.get_model_catalog(berg_dir=berg_dir)[MODEL_ID]
    assert entry["backbone"] == "alexnet" and entry["subjects"] == [1]
    described = berg.describe(MODEL_ID, berg_dir=berg_dir)
    assert described["backbone"]["feature_shapes"] == {"features.5": [192, 3, 3], "features.12": [256, 1, 1]}

    paths = berg.download(MODEL_ID, berg_dir=berg_dir, show_progress=False)
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-synthetic" / "model-alexnet"
    assert sorted(p.relative_to(model_dir).as_posix() for p in paths) == [
        "encoding_models_weights/berg_projection.safetensors",
        "encoding_models_weights/berg_readout_sub-01.safetensors",
        "metadata/berg_metadata_sub-01.json", "metadata/berg_metadata_sub-01.safetensors"]
    assert all(p.is_file() for p in paths)

    model = berg.get_encoding_model(MODEL_ID, subject=1, berg_dir=berg_dir, device="cpu", backbone_weights=None)
    got = berg.encode(model, images[-8:], show_progress=False)

    # the same responses, computed here: AlexNet features -> folded scaler/PCA projection -> ridge
    proj = load_file(str(model_dir / "encoding_models_weights" / "berg_projection.safetensors"))
    ridge = load_file(str(model_dir / "encoding_models_weights" / "berg_readout_sub-01.safetensors"))
    feats = _untrained_alexnet_features(images[-8:])
    z = sum(feats[n].reshape(8, -1).astype(np.float64) @ proj[f"weight.{n}"].T for n in NODES) + proj["bias"]
    expected = z @ ridge["weight"].T.astype(np.float64) + ridge["bias"]
    assert got.shape == (8, 12)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(got, served_model["result"].predictions, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


# Modules allowed to name a model, and why: storage readers, cards and their registries describe the formats and
# models; the command line wires the readers' commands; the synthetic-data helper defaults to a packaged card.
EXEMPT = ("berg/storage/", "berg/cards.py", "berg/card_schema.py", "berg/card_registries.py", "berg/cli.py",
          "berg/cli/", "berg/training/synthetic.py")
MODEL_WORDS = re.compile(r"img2fmri|brain-encoding-response-generator|bold5000|\bbmd\b|pypi-wheel", re.I)


def _code_words(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, word) for the string constants (docstrings left out), names, attributes and imports of a module,
    outside functions named ``register_cli`` (argparse wiring, which belongs to the command line)."""
    skip = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "register_cli"
            for n in ast.walk(f)}
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    words = []
    for node in ast.walk(tree):
        if id(node) in skip or id(node) in docs:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            words.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            words.append((node.lineno, node.attr))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            words += [(node.lineno, a.name) for a in node.names] + [(node.lineno, getattr(node, "module", "") or "")]
    return words


def test_shared_modules_name_no_model():
    ids = [yaml.safe_load(p.read_text())["model_id"] for p in (REPO / "model_cards").glob("*.yaml")]
    assert len(ids) >= 2
    pattern = re.compile("|".join(map(re.escape, ids)) + "|" + MODEL_WORDS.pattern, re.I)
    shared = [p for p in sorted((REPO / "berg").rglob("*.py"))
              if not p.relative_to(REPO).as_posix().startswith(EXEMPT)]
    assert len(shared) > 20
    found = [f"{p.relative_to(REPO)}:{line}: {word[:60]!r}" for p in shared
             for line, word in _code_words(ast.parse(p.read_text())) if pattern.search(word)]
    assert found == [], "shared modules name a model:\n" + "\n".join(found)


def test_loading_fetches_missing_native_files_from_the_source(served_model, tmp_path):
    (tmp_path / "model_cards").mkdir()
    card = served_model["berg_dir"] / "model_cards" / f"{MODEL_ID}.yaml"
    (tmp_path / "model_cards" / card.name).write_bytes(card.read_bytes())
    model = berg.get_encoding_model(MODEL_ID, subject=1, berg_dir=tmp_path, device="cpu", backbone_weights=None)
    images = served_model["images"][-8:]
    np.testing.assert_allclose(berg.encode(model, images, show_progress=False), served_model["result"].predictions,
                               rtol=1e-4, atol=1e-4 * np.abs(served_model["result"].predictions).max())
    assert (tmp_path / model.card.folder / ".berg_manifest.json").is_file()


def test_a_model_file_changed_after_download_is_never_used(served_model, tmp_path, monkeypatch):
    """A readout rewritten in place as a valid safetensors file with other weights: offline the load refuses it,
    online it is set aside and fetched again, and the responses are the model's own."""
    from safetensors.numpy import save_file

    from berg.errors import OfflineError

    (tmp_path / "model_cards").mkdir()
    card = served_model["berg_dir"] / "model_cards" / f"{MODEL_ID}.yaml"
    (tmp_path / "model_cards" / card.name).write_bytes(card.read_bytes())
    load = dict(subject=1, berg_dir=tmp_path, device="cpu", backbone_weights=None)
    images = served_model["images"][-8:]
    original = berg.encode(berg.get_encoding_model(MODEL_ID, **load), images, show_progress=False)
    model_dir = tmp_path / berg.registry.get_card(MODEL_ID, tmp_path).folder
    readout = model_dir / "encoding_models_weights" / "berg_readout_sub-01.safetensors"
    arrays = load_file(str(readout))
    save_file({k: (v * 2 + 1).astype(v.dtype) for k, v in arrays.items()}, str(readout))  # same size, other weights

    monkeypatch.setenv("BERG_OFFLINE", "1")
    with pytest.raises(OfflineError, match="berg_readout_sub-01.safetensors"):
        berg.get_encoding_model(MODEL_ID, **load)
    monkeypatch.delenv("BERG_OFFLINE")
    again = berg.encode(berg.get_encoding_model(MODEL_ID, **load), images, show_progress=False)
    np.testing.assert_array_equal(again, original)
    assert np.array_equal(load_file(str(readout.with_name(readout.name + ".changed")))["bias"], arrays["bias"] * 2 + 1)
