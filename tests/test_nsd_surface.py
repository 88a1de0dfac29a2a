"""fmri-nsd_fsaverage-vit_b_32 on BERG's files as BERG's creation code writes them: responses against the float64
chain, every selection form, BERG's call patterns and metadata, GIFTI outputs and the fsaverage5 figure.

The fast tests use the packaged card with two of the twelve ViT layers and six components (the real 163,842
vertices per hemisphere); one slow test runs the packaged card at full width (460,800 features, 250 components).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torchvision
import yaml
from torchvision.models.feature_extraction import create_feature_extractor

import berg
from berg.cli import main as cli_main
from berg.errors import InvalidSelectionError, InvalidSubjectError
from _berg_surface_producer import reference_responses, write_surface_tree
from _support import packaged_card_data

MODEL_ID = "fmri-nsd_fsaverage-vit_b_32"
N = 163842
TEST_ID = "test-nsd-vit"
NODES = ["encoder.layers.encoder_layer_0.add_1", "encoder.layers.encoder_layer_11.add_1"]
TRANSFORMS = torchvision.models.ViT_B_32_Weights.IMAGENET1K_V1.transforms()


def vit_features(images: np.ndarray, nodes) -> np.ndarray:
    """Independent features: torchvision's untrained ViT-B/32 (seed 0), its preset transforms on the uint8
    tensor, the nodes flattened and concatenated in order, as BERG does."""
    torch.manual_seed(0)
    extractor = create_feature_extractor(torchvision.models.vit_b_32(), return_nodes=list(nodes)).eval()
    with torch.inference_mode():
        out = extractor(TRANSFORMS(torch.from_numpy(images)))
    return torch.hstack([torch.flatten(out[n], 1) for n in nodes]).double().numpy()


def _relative_error(ours, expected) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Three 224 x 224 uint8 images, (3, 3, 224, 224) as BERG takes them."""
    return np.random.default_rng(5).integers(0, 256, (3, 3, 224, 224), dtype=np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A berg_dir with the reduced card and BERG's files for subjects 1 and 2."""
    berg_dir = tmp_path_factory.mktemp("nsd")
    card = packaged_card_data(MODEL_ID)
    card.update(model_id=TEST_ID, sources=[{"kind": "local"}])
    card["backbone"].update(return_nodes=NODES, feature_shapes={n: [50, 768] for n in NODES})
    card["readout"]["n_components"] = 6
    (berg_dir / "model_cards").mkdir()
    (berg_dir / "model_cards" / f"{TEST_ID}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    rng = np.random.default_rng(0)
    width = 2 * 50 * 768
    features = {s: {"train": rng.normal(0, 1, (24, width)).astype(np.float32),
                    "test": rng.normal(0, 1, (8, width)).astype(np.float32)} for s in (1, 2)}
    typed = berg.BERG(berg_dir).describe(TEST_ID)
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-nsd_fsaverage" / "model-vit_b_32"
    files = write_surface_tree(model_dir, type("Card", (), {"data": typed})(), [1, 2], features)
    return berg_dir, files


@pytest.fixture(scope="module")
def features(images):
    return vit_features(images, NODES)


@pytest.fixture(scope="module")
def whole(tree):
    berg_dir, _ = tree
    return {s: berg.get_encoding_model(TEST_ID, subject=s, device="cpu", backbone_weights=None, berg_dir=berg_dir)
            for s in (1, 2)}


@pytest.mark.parametrize("subject", [1, 2])
def test_whole_brain_equals_the_float64_chain(tree, whole, images, features, subject):
    _, files = tree
    lh, rh = berg.encode(whole[subject], images, show_progress=False)
    expected = reference_responses(files, subject, features)
    assert lh.dtype == rh.dtype == np.float32 and lh.shape == rh.shape == (3, N)
    assert _relative_error(lh, expected[0]) <= 1e-5 and _relative_error(rh, expected[1]) <= 1e-5
    one = berg.encode(whole[subject], images[:1], show_progress=False)  # a batch of one keeps its shape
    assert one[0].shape == (1, N)


@pytest.mark.parametrize("selection, roi", [
    ({"roi": "FFA-1"}, "FFA-1"),
    ({"roi": "mTL-words"}, "mTL-words"),     # no right-hemisphere vertex
    ({"roi": "OVWFA"}, "OWFA"),               # BERG's card spelling of the metadata's OWFA
])
def test_roi_selection_takes_each_hemispheres_vertices(tree, images, features, selection, roi):
    berg_dir, files = tree
    model = berg.get_encoding_model(TEST_ID, subject=2, selection=selection, device="cpu", backbone_weights=None,
                                    berg_dir=berg_dir)
    (lh, rh), meta = berg.encode(model, images, return_metadata=True, show_progress=False)
    stored = files["metadata/metadata_subject-02.npy"]["fmri"]
    lh_idx, rh_idx = stored["lh_fsaverage_rois"][roi], stored["rh_fsaverage_rois"][roi]
    expected = reference_responses(files, 2, features)
    assert lh.shape == (3, lh_idx.size) and rh.shape == (3, rh_idx.size)
    assert _relative_error(lh, expected[0][:, lh_idx]) <= 1e-5
    if rh_idx.size:
        assert _relative_error(rh, expected[1][:, rh_idx]) <= 1e-5
    else:
        assert roi == "mTL-words"
    np.testing.assert_array_equal(meta["coordinates"]["vertex"], np.concatenate([lh_idx, rh_idx]))
    np.testing.assert_array_equal(meta["fmri"]["lh_fsaverage_rois"][roi], lh_idx)  # BERG's view, whole subject


def test_vertex_masks_and_a_union_of_rois(tree, images, features):
    berg_dir, files = tree
    rng = np.random.default_rng(1)
    lh_mask = (rng.random(N) < 0.01).astype(int)
    expected = reference_responses(files, 1, features)
    common = {"subject": 1, "device": "cpu", "backbone_weights": None, "berg_dir": berg_dir}
    lh, rh = berg.encode(berg.get_encoding_model(TEST_ID, selection={"lh_vertices": lh_mask}, **common), images,
                         show_progress=False)
    assert lh.shape == (3, lh_mask.sum()) and rh.shape == (3, N)  # BERG: a hemisphere without a mask is whole
    assert _relative_error(lh, expected[0][:, lh_mask.astype(bool)]) <= 1e-5
    rh_mask = np.zeros(N, bool)
    rh_mask[[5, 7, 100_000]] = True
    lh, rh = berg.encode(berg.get_encoding_model(TEST_ID, selection={"lh_vertices": lh_mask, "rh_vertices": rh_mask},
                                                 **common), images, show_progress=False)
    assert _relative_error(rh, expected[1][:, rh_mask]) <= 1e-5
    union = berg.get_encoding_model(TEST_ID, selection={"roi": ["V1v", "PPA"]}, **common)
    lh, _ = berg.encode(union, images, show_progress=False)
    rois = files["metadata/metadata_subject-01.npy"]["fmri"]["lh_fsaverage_rois"]
    order = list(dict.fromkeys(np.concatenate([rois["V1v"], rois["PPA"]]).tolist()))
    assert _relative_error(lh, expected[0][:, order]) <= 1e-5


def test_bergs_call_patterns_and_metadata(tree, images):
    berg_dir, files = tree
    facade = berg.BERG(berg_dir)
    model = facade.get_encoding_model(TEST_ID, "cpu", {"roi": "V1v"}, subject=1, backbone_weights=None)
    (lh, rh), meta = facade.encode(model, images, True, show_progress=False)
    assert lh.shape[0] == rh.shape[0] == 3
    stored = files["metadata/metadata_subject-01.npy"]
    view = facade.get_model_metadata(TEST_ID, subject=1)
    np.testing.assert_array_equal(view["fmri"]["lh_ncsnr"], stored["fmri"]["lh_ncsnr"])
    np.testing.assert_array_equal(view["fmri"]["rh_ncsnr"], stored["fmri"]["rh_ncsnr"])
    for key in ("lh_correlation", "rh_r2", "lh_noise_ceiling", "rh_explained_variance"):
        np.testing.assert_allclose(view["encoding_models"][key], stored["encoding_models"][key], rtol=1e-5,
                                   atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(view["encoding_models"]["test_img_num"], stored["encoding_models"]["test_img_num"])
    assert meta["space"] == {"kind": "surface", "template": "fsaverage"}
    assert meta["layout"] == {"mesh": "fsaverage", "hemispheres": ["lh", "rh"], "n_vertices": N}
    assert meta["voxel_ijk"] is None and meta["n_outputs"] == lh.shape[1] + rh.shape[1]
    nc = view["accuracy"]["noise_ceiling"]
    assert nc.min() == 0 and nc.max() < 1 and view["accuracy"]["explained_variance"].max() <= 1  # fractions


@pytest.mark.parametrize("request_kwargs, error, words", [
    ({"subject": 9}, InvalidSubjectError, "valid subjects are 1, 2, 3, 4, 5, 6, 7, 8"),
    ({"subject": 1, "selection": {"roi": "FFA1"}}, InvalidSelectionError, "Did you mean: FFA-1"),
    ({"subject": 1, "selection": {"lh_vertices": np.ones(10242)}}, InvalidSelectionError, "length 163842"),
    ({"subject": 1, "selection": {"voxels": np.ones(5)}}, InvalidSelectionError, "'lh_vertices', 'rh_vertices'"),
])
def test_requests_are_checked_against_the_card_before_any_file(tmp_path, request_kwargs, error, words):
    with pytest.raises(error, match=words):
        berg.get_encoding_model(MODEL_ID, device="cpu", berg_dir=tmp_path, **request_kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing fetched, converted or created


def test_gifti_outputs_load_in_nibabel_and_nilearn(tree, whole, images, tmp_path):
    from nilearn import surface

    berg_dir, _ = tree
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "sub-01_task-photos_space-fsaverage_desc-vit_responses.func.gii"
    code = cli_main(["-q", "encode", TEST_ID, "--subject", "1", "--roi", "PPA", str(tmp_path / "images.npy"),
                     "-o", str(out), "--berg-dir", str(berg_dir), "--device", "cpu", "--backbone-weights", "untrained"])
    assert code == 0
    model = berg.get_encoding_model(TEST_ID, subject=1, selection={"roi": "PPA"}, device="cpu",
                                    backbone_weights=None, berg_dir=berg_dir)
    (lh, rh), meta = berg.encode(model, images, return_metadata=True, show_progress=False)
    for hemi, ours in (("L", lh), ("R", rh)):
        path = tmp_path / f"sub-01_task-photos_hemi-{hemi}_space-fsaverage_desc-vit_responses.func.gii"
        image = nib.load(path)
        assert len(image.darrays) == 3 and all(d.data.shape == (N,) for d in image.darrays)
        assert image.meta["AnatomicalStructurePrimary"] == {"L": "CortexLeft", "R": "CortexRight"}[hemi]
        data = surface.load_surf_data(str(path))
        assert data.shape == (N, 3)
        vertices = meta["coordinates"]["vertex"][meta["coordinates"]["hemisphere"] == (0 if hemi == "L" else 1)]
        np.testing.assert_allclose(data[vertices].T, ours, rtol=1e-6)
        assert np.isnan(np.delete(data, vertices, axis=0)).all()


def test_a_film_gives_hemisphere_time_series_with_the_tr(tree, whole, tmp_path):
    from _support import ramp_video

    film = ramp_video(tmp_path / "film.mp4", 30, 10.0, size=(64, 80))
    result = berg.predict_movie(whole[1], film, tr=1.5, output=[tmp_path / "pred_bold.func.gii", tmp_path / "p.h5"],
                                show_progress=False)
    assert result.bold.shape == (2, 2 * N)
    left = nib.load(tmp_path / "pred_bold_hemi-L.func.gii")
    assert len(left.darrays) == 2 and left.meta["RepetitionTime"] == "1.5"
    assert left.darrays[0].meta["TimeStep"] == "1500"
    np.testing.assert_allclose(left.darrays[1].data, result.bold[1, :N], rtol=1e-6)
    import h5py

    with h5py.File(tmp_path / "p.h5") as h5:
        assert h5["hemisphere"].shape == (2 * N,) and h5.attrs["n_vertices"] == N and h5.attrs["tr"] == 1.5


def test_responses_drawn_on_bundled_fsaverage5_without_download(tree, whole, images, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("the figure tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr("requests.Session.send", no_network, raising=False)
    (lh, rh), meta = berg.encode(whole[1], images[:1], return_metadata=True, show_progress=False)
    fig = berg.plot_responses((lh, rh), meta)
    assert len(fig.axes) == 5 and meta["model_id"] in fig._suptitle.get_text()  # four views and a colour bar
    assert [ax.get_title() for ax in fig.axes[:4]] == [f"{side} hemisphere, {view}" for view in ("lateral", "medial")
                                                       for side in ("left", "right")]
    values = berg.spaces.surface.SurfaceSpace.on_mesh(np.concatenate([lh, rh], 1), meta, mesh="fsaverage5")
    np.testing.assert_array_equal(values["lh"][0], lh[0, :10242])  # fsaverage5 is fsaverage's first vertices


@pytest.mark.parametrize("size", [(224, 224), (300, 400), (1080, 1920), (171, 128)])
def test_preprocessing_equals_the_vit_preset(whole, tmp_path, size):
    from PIL import Image

    from berg.stimuli import as_stimulus_set

    pixels = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    expected = TRANSFORMS(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    Image.fromarray(pixels).save(tmp_path / "im.png")
    forms = {"array HWC": pixels[None], "array CHW": pixels.transpose(2, 0, 1)[None].copy(),
             "tensor": torch.from_numpy(pixels[None]), "PIL": [Image.fromarray(pixels)], "file": [tmp_path / "im.png"]}
    for name, stimulus in forms.items():
        batch = as_stimulus_set(stimulus, "image").load(0, 1)
        ours = whole[1].extractor.prepare(batch)
        assert ours.shape == expected.shape and float((ours - expected).abs().max()) <= 1e-6, name


@pytest.mark.slow  # full width: 460,800 features, 250 components, a 1.1 GB pickle
def test_the_packaged_card_at_full_width(tmp_path, images):
    berg_dir = tmp_path / "berg"
    card = berg.BERG(berg_dir).describe(MODEL_ID)
    rng = np.random.default_rng(3)
    width = 12 * 50 * 768
    feats = {1: {"train": rng.normal(0, 1, (256, width)).astype(np.float32),
                 "test": rng.normal(0, 1, (6, width)).astype(np.float32)}}
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-nsd_fsaverage" / "model-vit_b_32"
    files = write_surface_tree(model_dir, type("Card", (), {"data": card})(), [1], feats)
    del feats
    import os

    os.environ["BERG_OFFLINE"] = "1"  # BERG's files are in place: nothing is fetched
    try:
        model = berg.get_encoding_model(MODEL_ID, subject=1, selection={"roi": "V1v"}, device="cpu",
                                        backbone_weights=None, berg_dir=berg_dir)
    finally:
        del os.environ["BERG_OFFLINE"]
    (lh, rh), meta = berg.encode(model, images[:2], return_metadata=True, show_progress=False)
    expected = reference_responses(files, 1, vit_features(images[:2], card["backbone"]["return_nodes"]))
    rois = files["metadata/metadata_subject-01.npy"]["fmri"]
    assert _relative_error(lh, expected[0][:, rois["lh_fsaverage_rois"]["V1v"]]) <= 1e-5
    assert _relative_error(rh, expected[1][:, rois["rh_fsaverage_rois"]["V1v"]]) <= 1e-5
    assert json.loads(json.dumps(meta.to_json()))["layout"]["n_vertices"] == N


def test_a_batch_job_writes_hemisphere_series_and_resumes(tree, tmp_path):
    import berg.batch
    from _support import ramp_video, write_photos

    berg_dir, _ = tree
    write_photos(tmp_path / "photos", 2)
    ramp_video(tmp_path / "clip.mp4", 20, 10.0, size=(32, 48))
    common = {"model": TEST_ID, "subjects": [1], "device": "cpu", "backbone_weights": "untrained",
              "selection": {"roi": "V1v"}}
    job = {"output": str(tmp_path / "out"), "berg_dir": str(berg_dir),
           "rows": [{"stimuli": str(tmp_path / "clip.mp4"), "tr": 1.0, **common},
                    {"stimuli": str(tmp_path / "photos"), **common}]}
    result = berg.batch.run(job, show_progress=False)
    assert result.ok and (result.n_units, result.n_done) == (2, 2)
    func = tmp_path / "out" / "sub-01" / "func"
    for hemi in "LR":
        image = nib.load(func / f"sub-01_task-clip_hemi-{hemi}_space-fsaverage_desc-testnsdvitV1v_bold.func.gii")
        assert len(image.darrays) == 2 and image.darrays[0].data.shape == (N,)
    again = berg.batch.run(job, show_progress=False)
    assert (again.n_skipped, again.n_done) == (2, 0)
