"""Helpers shared by the tests: packaged cards and tiny models, the img2fmri wheel, films and a fake encoder,
batch assets, BERG's bucket on a loopback S3 server, training datasets.

Heavy packages (torch, berg.training, the img2fmri importer) are imported inside the helpers that need them, so
a process that only wants a card (test_download's distribution workers) stays light. Data written the way
another system writes it lives in :mod:`_berg_producer`.
"""

from __future__ import annotations

import copy
import gzip
import os
import pickle
import signal
import socket
import warnings
import zipfile
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml
from PIL import Image

from berg.cards import ModelCard, packaged_cards
from berg.storage.native import SubjectMetadata, projection_path, readout_path, save_arrays, write_subject_metadata
from berg.storage.synthetic import MNI_2MM_AFFINE as AFFINE
from berg.video import write_synthetic_video

REPO = Path(__file__).resolve().parents[1]


# -- packaged cards and tiny native models ---------------------------------------------------------------------------

def packaged_card_data(model_id: str) -> dict:
    """A fresh, editable copy of the packaged card ``model_id``'s YAML content (the one way tests load one)."""
    return copy.deepcopy(next(c.data for c in packaged_cards() if c.model_id == model_id))


VOLUME_SHAPE = (6, 7, 5)


def write_test_model(berg_dir: Path, model_id: str = "test-resnet18", n_voxels: int = 60, n_components: int | None = None,
                     subjects=(1, 2), seed: int = 0, template: str = "fmri-bold5000-resnet18") -> dict:
    """Write a card and native files with random weights; return the raw parameters per subject.

    With ``n_components`` the readout is scaler -> SVD -> linear (folded on disk as berg does), else ridge.
    ROIs: ``lA`` (first third of voxels), ``rA`` (second third), ``B`` (every 4th voxel).
    """
    from berg.readout import fold_scaler_projection  # torch: imported when a model is written

    rng = np.random.default_rng(seed)
    card = packaged_card_data(template)
    card.update(model_id=model_id, train_dataset="test", model=model_id, subjects=list(subjects), format="native",
                rois=["lA", "rA", "B"], n_voxels={s: n_voxels for s in subjects}, sources=[{"kind": "local"}])
    card.pop("group", None)
    card["accuracy"] = ["correlation"]
    card["readout"] = {"kind": "scaler-svd-linear", "n_components": n_components} if n_components else {"kind": "ridge"}
    (berg_dir / "model_cards").mkdir(parents=True, exist_ok=True)
    (berg_dir / "model_cards" / f"{model_id}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-test" / f"model-{model_id}"
    shapes = card["backbone"]["feature_shapes"]
    node_dims = {n: int(np.prod(shapes[n])) for n in card["backbone"]["return_nodes"]}
    d = sum(node_dims.values())
    raw: dict = {"card": card, "model_dir": model_dir, "node_dims": node_dims}
    n_in = d
    if n_components:
        raw["mean"] = rng.normal(size=d)
        raw["scale"] = rng.uniform(0.5, 2.0, size=d)
        raw["components"] = rng.normal(size=(n_components, d)) / np.sqrt(d)
        blocks, bias = fold_scaler_projection(raw["components"], raw["mean"], raw["scale"], node_dims)
        save_arrays(projection_path(model_dir), {**{f"weight.{n}": b for n, b in blocks.items()}, "bias": bias})
        n_in = n_components
    flat = rng.choice(int(np.prod(VOLUME_SHAPE)), size=n_voxels, replace=False)
    ijk = np.stack(np.unravel_index(np.sort(flat), VOLUME_SHAPE), axis=1).astype(np.int32)
    third = n_voxels // 3
    rois = {"lA": np.arange(third), "rA": np.arange(third, 2 * third), "B": np.arange(0, n_voxels, 4)}
    for s in subjects:
        coef = (rng.normal(size=(n_voxels, n_in)) / np.sqrt(n_in)).astype(np.float32)
        intercept = rng.normal(size=n_voxels).astype(np.float32)
        save_arrays(readout_path(model_dir, s), {"weight": coef, "bias": intercept})
        arrays = {"voxel_ijk": ijk, "row_voxel": np.arange(n_voxels, dtype=np.int64),
                  "accuracy.correlation": rng.uniform(0, 1, n_voxels).astype(np.float32),
                  **{f"roi.{k}": v.astype(np.int64) for k, v in rois.items()}}
        info = {"model_id": model_id, "subject": s, "n_voxels": n_voxels, "n_rows": n_voxels,
                "volume_shape": list(VOLUME_SHAPE), "affine": AFFINE.tolist(), "rois": list(rois),
                "accuracy": {"correlation": "Pearson r"}, "space": {"kind": "subject"}}
        write_subject_metadata(model_dir, s, SubjectMetadata(info=info, arrays=arrays))
        raw[s] = {"coef": coef.astype(np.float64), "intercept": intercept.astype(np.float64), "voxel_ijk": ijk,
                  "rois": rois}
    return raw


TOY_SPACES = {
    "volume": {"kind": "volume", "template": "individual"},
    "surface": {"kind": "surface", "template": "fsaverage5", "n_vertices": 10242},
    "sensors": {"kind": "sensors", "channels": ["Fz", "Cz", "Pz", "Oz"], "times": {"start": -0.1, "step": 0.05,
                                                                                   "count": 6}, "repetitions": 2},
}


def _toy_layout(kind: str, shared_voxels: bool = False) -> tuple[dict, dict, dict]:
    """Coordinates, ROI rows and metadata fields of a toy subject in each space (``shared_voxels``: the volume's
    last 4 columns repeat the voxels of columns 1, 3, 5 and 1)."""
    if kind == "volume":
        ijk = np.argwhere(np.ones((4, 5, 3), bool))[::5].astype(np.int32)
        if shared_voxels:
            ijk[-4:] = ijk[[1, 3, 5, 1]]
        return ({"voxel_ijk": ijk}, {"A": np.arange(0, 12, 2)},
                {"volume_shape": [4, 5, 3], "affine": AFFINE.tolist()})
    if kind == "surface":  # 30 left vertices, 30 right ones; ROI L has no right vertex
        coords = {"hemisphere": np.repeat(np.arange(2, dtype=np.int8), 30),
                  "vertex": np.concatenate([np.arange(30), np.arange(5, 35)]).astype(np.int32)}
        return coords, {"A": np.array([1, 2, 40, 41]), "L": np.array([3, 4, 5])}, {}
    grid = np.stack(np.unravel_index(np.arange(2 * 4 * 6), (2, 4, 6)), 1)
    return {n: grid[:, i].astype(np.int16) for i, n in enumerate(("repetition", "channel", "time"))}, {}, {}


def write_space_model(berg_dir: Path, kind: str, seed: int = 0, shared_voxels: bool = False) -> dict:
    """A ridge model on ResNet-18's 512 pool features whose outputs live in a toy space of ``kind`` (a card plus
    native data); return its card, weight (n, 512) and bias (n,)."""
    rng = np.random.default_rng(seed)
    coords, rois, fields = _toy_layout(kind, shared_voxels)
    n = next(iter(coords.values())).shape[0]
    model_id = f"toy-{kind}"
    card = packaged_card_data("fmri-bold5000-resnet18")
    card.pop("group")
    card.update(model_id=model_id, train_dataset="toy", model=kind, format="native", subjects=[1],
                rois=list(rois), space=TOY_SPACES[kind], sources=[{"kind": "local"}], accuracy=["correlation"],
                readout={"kind": "ridge"})
    card.pop("n_voxels")
    if kind == "volume":
        card["n_voxels"] = {1: n}
    (berg_dir / "model_cards").mkdir(parents=True, exist_ok=True)
    (berg_dir / "model_cards" / f"{model_id}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-toy" / f"model-{kind}"
    weight = (rng.normal(size=(n, 512)) / 20).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    save_arrays(readout_path(model_dir, 1), {"weight": weight, "bias": bias})
    arrays = {**coords, "row_voxel": np.arange(n, dtype=np.int64), "accuracy.correlation": rng.uniform(0, 1, n)
              .astype(np.float32), **{f"roi.{k}": v.astype(np.int64) for k, v in rois.items()}}
    info = {"model_id": model_id, "subject": 1, "n_voxels": n, "n_rows": n, "rois": list(rois),
            "space": TOY_SPACES[kind], "accuracy": {"correlation": "Pearson r"}, **fields}
    write_subject_metadata(model_dir, 1, SubjectMetadata(info=info, arrays=arrays))
    return {"card": card, "weight": weight.astype(np.float64), "bias": bias.astype(np.float64), "coordinates": coords}


# -- the img2fmri 1.0 wheel -------------------------------------------------------------------------------------------

ROIS = ("EarlyVis", "OPA", "LOC", "RSC", "PPA")
_IMG2FMRI_SESSION: dict = {}  # one import per test session, whichever test module asks first


@pytest.fixture(scope="session")
def img2fmri_wheel():
    """Path of the verified img2fmri 1.0 wheel (from the cache, or fetched into it with pip)."""
    from berg.errors import MissingFilesError
    from berg.storage.img2fmri import locate_wheel

    try:
        return locate_wheel()
    except MissingFilesError as exc:  # OfflineError included
        pytest.fail(f"img2fmri wheel not available (run `berg import-img2fmri` once, with network): {exc}")


@pytest.fixture(scope="session")
def img2fmri_model_dir(img2fmri_wheel, tmp_path_factory):
    """The model folder of one import into a fresh berg_dir, shared by the session."""
    from berg.storage.img2fmri import import_img2fmri

    if "model_dir" not in _IMG2FMRI_SESSION:
        _IMG2FMRI_SESSION["model_dir"] = import_img2fmri(tmp_path_factory.mktemp("berg_dir"), wheel=img2fmri_wheel)
    return _IMG2FMRI_SESSION["model_dir"]


class Wheel:
    """The wheel's own files, read the way img2fmri reads them (scikit-learn unpickling allowed here only)."""

    def __init__(self, path):
        self.zip = zipfile.ZipFile(path)

    def nifti(self, member: str) -> nib.Nifti1Image:
        return nib.Nifti1Image.from_bytes(gzip.decompress(self.zip.read(f"img2fmri/{member}")))

    def ridge(self, subject: int, roi: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickled with scikit-learn 1.1.1
            return pickle.loads(self.zip.read(f"img2fmri/models/subj{subject}_{roi}_model.pkl"))

    def mask(self, subject: int, name: str) -> np.ndarray:
        member = f"derivatives/bool_masks/derivatives_spm_sub-CSI{subject}_sub-CSI{subject}_mask-{name}.nii.gz"
        return self.nifti(member).get_fdata() > 0

    def subject_volume(self, subject: int, features: np.ndarray, rois=ROIS) -> np.ndarray:
        """img2fmri's subject-space prediction: (*mask_shape, n) volumes, NaN outside the ROIs."""
        volume = None
        for roi in rois:
            pred = self.ridge(subject, roi).predict(features)
            lh, rh = self.mask(subject, "LH" + roi), self.mask(subject, "RH" + roi)
            if volume is None:
                volume = np.full(lh.shape + (len(features),), np.nan)
            n_lh = int(lh.sum())
            for mask, values in ((lh, pred[:, :n_lh]), (rh, pred[:, n_lh:])):
                volume[mask] = np.nanmean(np.stack([volume[mask], values.T]), axis=0)
        return volume


# -- films and a fake encoder -----------------------------------------------------------------------------------------

class FakeModel:
    """Three "voxels": the mean red, green and blue of each frame (or clip), / 255.

    It has what :class:`berg.movie.MovieModel` asks for and nothing else. ``kill_after`` batches, the process
    kills itself with SIGKILL (to test resuming).
    """

    def __init__(self, kind: str = "image", n_frames: int = 5, kill_after: int | None = None, subject=1):
        self.stimulus_kind = kind
        self.n_frames = n_frames if kind == "video" else None
        self.n_outputs = 3
        self.metadata = {
            "model_id": "fake-rgb", "subject": subject, "units": "fraction of full scale",
            "roi_columns": {"red": [0], "rgb": [0, 1, 2]},
            "voxel_ijk": np.array([[0, 0, 0], [1, 0, 0], [0, 2, 1]]),
            "volume_shape": [2, 3, 2], "affine": np.diag([2.0, 2.0, 2.0, 1.0]),
            "fill_value": 0.0 if subject == "group" else float("nan"),  # group maps are 0 outside, as img2fmri's
        }
        self.kill_after = kill_after
        self.calls = 0
        self.seen = 0

    def stage(self, batch: np.ndarray) -> np.ndarray:
        return batch

    def predict_staged(self, staged, *, flush_after_s=None):  # answers every batch at once: nothing is held
        for batch in staged:
            self.calls += 1
            if self.kill_after is not None and self.calls > self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            self.seen += len(batch)
            axes = tuple(range(1, batch.ndim - 1))
            yield (batch.mean(axis=axes) / 255.0).astype(np.float32)


def flash_video(path: Path, n_frames: int, fps: float, flashes: dict[int, tuple[int, int, int]], size=(8, 8)) -> Path:
    """A black video whose frames ``flashes`` keys are filled with the given RGB colour."""
    def frame(i: int) -> np.ndarray:
        return np.broadcast_to(np.array(flashes.get(i, (0, 0, 0)), np.uint8), (*size, 3)).copy()

    return write_synthetic_video(path, n_frames, fps, size, frame)


def ramp_level(i):
    """Grey level of frame ``i`` of :func:`ramp_video` (frame indices 0..49 are told apart by it)."""
    return (np.asarray(i) * 5) % 250


def ramp_index(red: np.ndarray) -> np.ndarray:
    """Frame index (0..49) from a decoded mean grey level (codec error is within +-2)."""
    return np.rint(np.asarray(red, dtype=np.float64) / 5.0).astype(np.int64)


def ramp_video(path: Path, n_frames: int, fps: float, size=(8, 8), b_frames: int = 0) -> Path:
    """Frame i is uniformly grey at ``ramp_level(i)`` (grey survives yuv420p coding within +-2); ``b_frames`` as in
    :func:`berg.video.write_synthetic_video`."""
    def frame(i: int) -> np.ndarray:
        v = ramp_level(i)
        return np.full((*size, 3), v, np.uint8)

    return write_synthetic_video(path, n_frames, fps, size, frame, b_frames=b_frames)


# -- batch assets -----------------------------------------------------------------------------------------------------

MODEL = "test-resnet18"
IMAGE_SIZES = [(40, 50), (40, 50), (36, 30), (40, 50), (40, 50)]  # one odd size: a ragged shard
FILMS = {"film_a": 20, "film_b": 25}  # name -> frames at 10 frames/s


def write_photos(folder: Path, n: int, size=(40, 50)) -> Path:
    """``n`` random RGB PNG photos ``p{i}.png`` of ``size`` (height, width) in a new ``folder``."""
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def make_assets(folder: Path) -> dict:
    """Write the model (subjects 1, 2), ``photos/im*.png`` and ``films/*.mp4`` under ``folder``."""
    berg_dir = folder / "berg_dir"
    write_test_model(berg_dir, model_id=MODEL)
    rng = np.random.default_rng(3)
    (folder / "photos").mkdir(parents=True)
    for i, (h, w) in enumerate(IMAGE_SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "photos" / f"im{i}.png")
    (folder / "films").mkdir()
    for name, n in FILMS.items():
        ramp_video(folder / "films" / f"{name}.mp4", n, 10.0, size=(32, 48))
    return {"berg_dir": berg_dir, "photos": sorted((folder / "photos").glob("*.png")),
            "films": sorted((folder / "films").glob("*.mp4"))}


def job_dict(folder: Path, output: Path, **ray) -> dict:
    """Images (shards of 2) for subjects 1 and 2, and both films for subject 1, on the CPU, untrained backbone."""
    common = {"model": MODEL, "device": "cpu", "backbone_weights": "untrained"}
    job = {"output": str(output), "berg_dir": str(folder / "berg_dir"), "rows": [
        {"stimuli": str(folder / "photos"), "subjects": "all", "shard_size": 2, **common},
        {"stimuli": str(folder / "films" / "*.mp4"), "subjects": [1], "tr": 1.0, "hrf": "glover", **common}]}
    if ray:
        job["ray"] = ray
    return job


def units_run(monkeypatch) -> list[str]:
    """The uids of the units the engines run from now on, in order (``run_units`` wrapped; a unit run alone
    after its group's shared pass failed counts twice)."""
    from berg.batch import grouping

    ran: list[str] = []
    original = grouping.run_units
    monkeypatch.setattr(grouping, "run_units", lambda model, units, root, *a, **kw: ran.extend(u.uid for u in units)
                        or original(model, units, root, *a, **kw))
    return ran


def read_outputs(root: Path) -> dict[str, np.ndarray]:
    """Every array output under ``root``: ``responses`` of image shards, ``bold`` and samples of films."""
    arrays = {}
    for path in sorted(root.rglob("*.h5")):
        with h5py.File(path, "r") as h5:
            for key in ("responses", "bold", "samples/responses"):
                if key in h5:
                    arrays[f"{path.relative_to(root)}:{key}"] = h5[key][()]
    return arrays


# -- BERG's layout on a loopback S3 server ----------------------------------------------------------------------------

BUCKET = "brain-encoding-response-generator"
TINY_SHAPES = {"features.2": [2, 3, 4, 4], "features.5.cat": [3, 2, 3, 3], "features.7": [2, 2, 2, 2],
               "features.9.cat": [2, 1, 3, 3], "features.11.cat": [3, 1, 2, 2], "features.13": [2, 1, 2, 2],
               "avgpool": [5, 1, 1, 1]}
TINY_VOXELS = {1: 37, 2: 41}
TINY_VOLUME = (6, 7, 5)


def tiny_card(n_components: int = 5) -> ModelCard:
    """The fmri-bmd-s3d card with tiny feature shapes, two subjects and a small volume."""
    from berg.cards import validate_card

    data = packaged_card_data("fmri-bmd-s3d")
    data["model_id"] = "fmri-bmd-tiny"
    data["backbone"]["feature_shapes"] = TINY_SHAPES
    data["readout"]["n_components"] = n_components
    data["subjects"] = sorted(TINY_VOXELS)
    data["n_voxels"] = dict(TINY_VOXELS)
    data["space"]["volume_shape"] = list(TINY_VOLUME)
    data["rois"] = ["lV1v", "rFFA", "BMDgeneral"]
    data["sources"][0]["prefix"] = "tests/tiny/"
    return validate_card(data, "<tiny test card>")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_client(endpoint: str) -> Any:
    """A signed client with dummy credentials, for filling the loopback server."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2", aws_access_key_id="test",
                        aws_secret_access_key="test")


def upload_tree(client: Any, local_dir: Path, prefix: str, multipart_threshold: int = 8 * 1024 * 1024) -> None:
    """Upload every file under ``local_dir`` to ``BUCKET`` under ``prefix``, public-read like BERG's bucket."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=5 * 1024 * 1024)
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, prefix + path.relative_to(local_dir).as_posix(), Config=config,
                           ExtraArgs={"ACL": "public-read"})


# -- training datasets ------------------------------------------------------------------------------------------------

IMAGE_SIZE = 32


def small_template(folder: Path) -> Path:
    """A ResNet-18 card that resizes to 32 x 32 (fast on a CPU); return its YAML path."""
    from berg.cards import validate_card

    data = packaged_card_data("fmri-bold5000-resnet18")
    data.update(model_id="template-resnet18-small", subjects=[1], sources=[{"kind": "local"}])
    data.pop("group", None)
    data.pop("n_voxels", None)
    data["preprocessing"]["resize"] = [IMAGE_SIZE, IMAGE_SIZE]
    validate_card(data, "template")
    path = Path(folder) / "template.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def image_dataset(folder: Path, n_train: int = 40, n_test: int = 12, n_voxels: int = 30, **options):
    """Random images whose synthetic responses are a linear map of untrained ResNet-18 features.

    Returns (spec path, SyntheticData, images (n, 3, 32, 32) uint8).
    """
    import torch

    from berg.backbones import build_feature_extractor
    from berg.cards import validate_card
    from berg.training import make_synthetic, write_dataset

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = small_template(folder)
    images = np.random.default_rng(1).integers(0, 256, (n_train + n_test, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    extractor = build_feature_extractor(validate_card(yaml.safe_load(template.read_text()), "t"), None)
    with torch.inference_mode():
        feats = extractor.extract(torch.from_numpy(images))["avgpool"].flatten(1).numpy()
    data = make_synthetic(n_train=n_train, n_test=n_test, n_voxels=n_voxels, test_repeats=(2, 3), features=feats)
    spec = write_dataset(data, folder, stimuli=images, template=template.name, backbone_weights=None,
                         fit={"n_components": 10, "n_folds": 3}, **options)
    return spec, data, images


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (none when it does not exist)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


def feature_dataset(folder: Path, n_train: int = 60, n_test: int = 20, n_voxels: int = 40, test_repeats=(2, 3),
                    n_latent: int = 8, **options):
    """A dataset of precomputed 512-d features (ResNet-18 avgpool size) spanning ``n_latent`` dimensions.

    Returns (spec path, SyntheticData).
    """
    from berg.training import make_synthetic, write_dataset

    rng = np.random.default_rng(2)
    feats = rng.standard_normal((n_train + n_test, n_latent)) @ rng.standard_normal((n_latent, 512))
    data = make_synthetic(n_train=n_train, n_test=n_test, n_voxels=n_voxels, test_repeats=test_repeats,
                          features=feats, seed=2)
    options.setdefault("fit", {"n_components": n_latent, "n_folds": 3})
    options.setdefault("template", "fmri-bold5000-resnet18")
    return write_dataset(data, folder, **options), data
