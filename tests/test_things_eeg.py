"""eeg-things_eeg_2-vit_b_32 on BERG's files as BERG's creation code writes them, in both PCA layouts: responses
against the float64 chain, channel and time selections, BERG's metadata, MNE-Python objects, the figure, HDF5
outputs, batch jobs, and the refusal of films.

The fast tests use the packaged card with two of the twelve ViT layers and six components (the real 63 channels,
140 time points and 4 repetitions); one slow test runs the packaged card at full width (460,800 features, 250
components) with BERG's README lines.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml

import berg
from berg.errors import IncompatibleModelError, InvalidArgumentError, InvalidSelectionError, ModelFormatError
from _berg_eeg_producer import reference_responses, write_eeg_tree
from _support import packaged_card_data
from test_nsd_surface import vit_features

MODEL_ID = "eeg-things_eeg_2-vit_b_32"
TEST_ID = "test-things-eeg"
NODES = ["encoder.layers.encoder_layer_0.add_1", "encoder.layers.encoder_layer_11.add_1"]
CHANNELS = packaged_card_data(MODEL_ID)["space"]["channels"]
SUBJECTS = {"shared": (1, 2), "per-repetition": (3,)}


def _relative_error(ours, expected) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - expected).max() / np.abs(expected).max())


def _write_card(berg_dir, model_id=TEST_ID):
    card = packaged_card_data(MODEL_ID)
    card.update(model_id=model_id, sources=[{"kind": "local"}])
    card["backbone"].update(return_nodes=NODES, feature_shapes={n: [50, 768] for n in NODES})
    card["readout"]["n_components"] = 6
    (berg_dir / "model_cards").mkdir(exist_ok=True)
    (berg_dir / "model_cards" / f"{model_id}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return type("Card", (), {"data": berg.BERG(berg_dir).describe(model_id)})()


def _features(subjects, width=2 * 50 * 768, n_train=24, seed=0):
    rng = np.random.default_rng(seed)
    return {s: {"train": rng.normal(0, 1, (n_train, width)).astype(np.float32),
                "test": rng.normal(0, 1, (8, width)).astype(np.float32)} for s in subjects}


MODEL_DIR = ("encoding_models", "modality-eeg", "train_dataset-things_eeg_2", "model-vit_b_32")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A berg_dir with the reduced card and BERG's files: subjects 1 and 2 in the older layout (one PCA), subject 3
    in the newer one (one PCA per repetition)."""
    berg_dir = tmp_path_factory.mktemp("eeg")
    card = _write_card(berg_dir)
    files = {}
    for layout, subjects in SUBJECTS.items():
        files.update(write_eeg_tree(berg_dir.joinpath(*MODEL_DIR), card, list(subjects), _features(subjects),
                                    layout=layout))
    return berg_dir, files


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Three uint8 images (3, 3, 224, 224), as BERG takes them."""
    return np.random.default_rng(5).integers(0, 256, (3, 3, 224, 224), dtype=np.uint8)


@pytest.fixture(scope="module")
def features(images):
    return vit_features(images, NODES)


def _model(tree, subject, selection=None):
    berg_dir, _ = tree
    return berg.get_encoding_model(TEST_ID, subject=subject, selection=selection, device="cpu",
                                   backbone_weights=None, berg_dir=berg_dir)


@pytest.fixture(scope="module")
def whole(tree):
    return {s: _model(tree, s) for s in (1, 2, 3)}


@pytest.mark.parametrize("subject", [1, 2, 3])  # 1, 2: one shared PCA; 3: one PCA per repetition
def test_all_channels_equal_the_float64_chain(tree, whole, images, features, subject):
    _, files = tree
    out = berg.encode(whole[subject], images, show_progress=False)
    expected = reference_responses(files, subject, features, CHANNELS)
    assert out.dtype == np.float32 and out.shape == (3, 4, 63, 140) == expected.shape
    assert _relative_error(out, expected) <= 1e-5
    assert not np.allclose(expected[:, 0], expected[:, 1])  # the repetitions' models differ
    one = berg.encode(whole[subject], images[1:2], show_progress=False)
    assert one.shape == (1, 4, 63, 140)  # a batch of one keeps every axis
    assert _relative_error(one, expected[1:2]) <= 1e-5


def test_the_two_layouts_are_told_apart(tree):
    berg_dir, _ = tree
    layouts = {s: berg.get_model_metadata(TEST_ID, subject=s, berg_dir=berg_dir).stored.info["pca_layout"]
               for s in (1, 3)}
    assert layouts == {1: "shared", 3: "per-repetition"}


@pytest.mark.parametrize("subject", [1, 3])
def test_channels_in_the_users_order_and_a_timepoint_mask(tree, images, features, subject):
    _, files = tree
    expected = reference_responses(files, subject, features, CHANNELS)
    chosen = ["Oz", "Cz", "Fp1", "PO8"]
    idx = [CHANNELS.index(c) for c in chosen]
    out, meta = berg.encode(_model(tree, subject, {"channels": chosen}), images, return_metadata=True,
                            show_progress=False)
    assert out.shape == (3, 4, 4, 140)
    assert _relative_error(out, expected[:, :, idx]) <= 1e-5
    assert [meta["layout"]["ch_names"][c] for c in meta["coordinates"]["channel"][:4 * 140:140]] == chosen
    mask = np.zeros(140, dtype=int)
    mask[[3, 20, 21, 22, 139]] = 1
    out = berg.encode(_model(tree, subject, {"timepoints": mask}), images, show_progress=False)
    assert out.shape == (3, 4, 63, 5)
    assert _relative_error(out, expected[..., mask.astype(bool)]) <= 1e-5
    both = berg.encode(_model(tree, subject, {"channels": chosen, "timepoints": mask}), images, show_progress=False)
    assert _relative_error(both, expected[:, :, idx][..., mask.astype(bool)]) <= 1e-5


@pytest.mark.parametrize("selection, words", [
    ({"channels": ["OZ"]}, "Did you mean: Oz"),
    ({"channels": ["Oz", "Oz"]}, "names a channel twice"),
    ({"timepoints": np.ones(141)}, "length 140"),
    ({"timepoints": np.zeros(140)}, "selects nothing"),
    ({"roi": "V1"}, "ROI"),
])
def test_selections_are_checked_against_the_card_before_any_file(tmp_path, selection, words):
    with pytest.raises(InvalidSelectionError, match=words):
        berg.get_encoding_model(MODEL_ID, subject=1, selection=selection, device="cpu", berg_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bergs_metadata_view(tree):
    berg_dir, files = tree
    for subject in (1, 3):
        stored = files[f"metadata/metadata_subject-{subject:02d}.npy"]
        view = berg.BERG(berg_dir).get_model_metadata(TEST_ID, subject=subject)
        assert view.berg_view()["eeg"]["ch_names"] == stored["eeg"]["ch_names"] == CHANNELS
        np.testing.assert_allclose(view.berg_view()["eeg"]["times"], stored["eeg"]["times"], atol=1e-9)
        encoding = view.berg_view()["encoding_models"]
        for key in ("correlation_averaged_repetitions", "correlation_single_repetitions"):
            assert encoding[key].shape == stored["encoding_models"][key].shape
            np.testing.assert_allclose(encoding[key], stored["encoding_models"][key], rtol=1e-6, atol=1e-7)
        info = stored["encoding_models"]["train_img_info"]
        assert encoding["train_img_info"]["train_img_files"] == info["train_img_files"].tolist()
        assert encoding["test_img_info"].keys() == stored["encoding_models"]["test_img_info"].keys()
    meta = berg.get_model_metadata(TEST_ID, subject=1, berg_dir=berg_dir)
    assert meta["space"] == {"kind": "sensors", "template": None}
    assert meta["layout"]["ch_names"] == CHANNELS and meta["layout"]["repetitions"] == 4
    np.testing.assert_allclose(meta["layout"]["times"], -0.1 + 0.005 * np.arange(140), atol=1e-12)
    assert meta["n_outputs"] == 4 * 63 * 140 and meta["units"].startswith("z-scored")


def test_evoked_arrays_carry_the_channels_times_and_montage(tree, whole, images):
    import mne

    out, meta = berg.encode(whole[1], images, return_metadata=True, show_progress=False)
    evokeds = berg.to_mne(out, meta, stimulus=2)
    assert len(evokeds) == 4 and all(isinstance(e, mne.EvokedArray) for e in evokeds)
    for r, evoked in enumerate(evokeds):
        assert evoked.ch_names == CHANNELS and evoked.nave == 1
        np.testing.assert_allclose(evoked.times, -0.1 + 0.005 * np.arange(140), atol=1e-9)
        np.testing.assert_array_equal(evoked.data, out[2, r])  # z-scores, kept unscaled
    positions = evokeds[0].get_montage().get_positions()["ch_pos"]
    assert sorted(positions) == sorted(CHANNELS)
    xyz = np.array([positions[c] for c in CHANNELS])
    assert np.isfinite(xyz).all() and (np.linalg.norm(xyz, axis=1) > 0.05).all()  # metres from the head centre
    oz, fp1 = positions["Oz"], positions["Fp1"]
    assert oz[1] < 0 < fp1[1]  # the occipital electrode behind, the frontal pole in front
    mean = berg.to_mne(out, meta, stimulus=2, average=True)
    assert mean.nave == 4
    np.testing.assert_allclose(mean.data, out[2].astype(np.float64).mean(0), rtol=1e-9)


def test_evoked_arrays_of_a_selection(tree, images):
    chosen = ["O1", "Cz"]
    mask = np.zeros(140, dtype=bool)
    mask[40:60] = True
    out, meta = berg.encode(_model(tree, 1, {"channels": chosen, "timepoints": mask}), images, return_metadata=True,
                            show_progress=False)
    evoked = berg.to_mne(out, meta, average=True)
    assert evoked.ch_names == chosen and evoked.times.size == 20
    assert evoked.times[0] == pytest.approx(-0.1 + 40 * 0.005)
    np.testing.assert_allclose(evoked.data, out[0].astype(np.float64).mean(0), rtol=1e-9)
    mask[70] = True  # a gap: not evenly sampled
    out, meta = berg.encode(_model(tree, 1, {"timepoints": mask}), images, return_metadata=True, show_progress=False)
    with pytest.raises(InvalidArgumentError, match="not contiguous"):
        berg.to_mne(out, meta)
    with pytest.raises(InvalidArgumentError, match=r"expected \(n_stimuli, \*\(4, 63, 21\)\)"):
        berg.to_mne(out[:, :, :, :20], meta)
    with pytest.raises(InvalidArgumentError, match="stimulus"):
        berg.to_mne(out, meta, stimulus=3)


def test_butterfly_and_topomap_figure(tree, whole, images):
    out, meta = berg.encode(whole[1], images[:1], return_metadata=True, show_progress=False)
    fig = berg.plot_responses(out, meta, latencies=[0.1, 0.2, 0.3])
    butterfly = fig.axes[0]
    assert len(butterfly.lines) >= 63 and butterfly.get_xlabel() == "time (ms)"
    titles = [ax.get_title() for ax in fig.axes[1:4]]
    assert titles == ["100 ms", "200 ms", "300 ms"]
    np.testing.assert_allclose(butterfly.lines[0].get_ydata(), out[0, :, 0].astype(np.float64).mean(0), rtol=1e-9)
    peaks = berg.plot_responses(out, meta)  # default: the global field power's peaks after onset
    assert len(peaks.axes) == 5  # butterfly, three topomaps, colour bar
    with pytest.raises(InvalidArgumentError, match="latencies"):
        berg.plot_responses(out, meta, latencies=[0.7])


def test_hdf5_outputs_with_channel_names_and_times(tree, images, tmp_path):
    from berg.cli import main as cli_main

    berg_dir, _ = tree
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "eeg.h5"
    code = cli_main(["-q", "encode", TEST_ID, "--subject", "1", str(tmp_path / "images.npy"), "-o", str(out),
                     "--berg-dir", str(berg_dir), "--device", "cpu", "--backbone-weights", "untrained"])
    assert code == 0
    expected = berg.encode(_model(tree, 1), images, show_progress=False)
    with h5py.File(out) as h5:
        names = [n.decode() if isinstance(n, bytes) else n for n in h5["ch_names"][()]]
        assert names == CHANNELS
        np.testing.assert_allclose(h5["times"][()], -0.1 + 0.005 * np.arange(140), atol=1e-12)
        responses = h5["responses"][()]
        grid = [h5[n][()] for n in ("repetition", "channel", "time")]
    assert responses.shape == (3, 4 * 63 * 140)
    np.testing.assert_allclose(responses[:, (grid[0] == 2) & (grid[1] == 5)], expected[:, 2, 5], rtol=1e-6)


def test_a_batch_job_over_images_writes_eeg_outputs_and_refuses_films(tree, tmp_path):
    import json
    import subprocess

    import berg.batch
    from berg.errors import JobError
    from _support import ramp_video, write_photos
    from test_bids import _validator

    berg_dir, _ = tree
    write_photos(tmp_path / "photos", 3)
    common = {"model": TEST_ID, "subjects": [1, 3], "device": "cpu", "backbone_weights": "untrained",
              "selection": {"channels": ["Oz", "Pz"]}}
    job = {"output": str(tmp_path / "out"), "berg_dir": str(berg_dir),
           "rows": [{"stimuli": str(tmp_path / "photos"), **common}]}
    result = berg.batch.run(job, show_progress=False)
    assert result.ok and (result.n_units, result.n_done) == (2, 2)
    report = json.loads(subprocess.run([_validator(), "--format", "json", str(tmp_path / "out")], capture_output=True,
                                       text=True, timeout=300).stdout)  # an eeg/ datatype folder of berg's HDF5
    assert [i["code"] for i in report["issues"]["issues"] if i["severity"] == "error"] == []
    for subject in (1, 3):
        [path] = (tmp_path / "out" / f"sub-{subject:02d}" / "eeg").glob("*_responses.h5")
        with h5py.File(path) as h5:
            assert h5["responses"].shape == (3, 4 * 2 * 140)
            assert [n.decode() if isinstance(n, bytes) else n for n in h5["ch_names"][()]] == CHANNELS
    ramp_video(tmp_path / "clip.mp4", 20, 10.0, size=(32, 48))
    film = {**job, "output": str(tmp_path / "out2"), "rows": [{"stimuli": str(tmp_path / "clip.mp4"), "tr": 1.0,
                                                               **common}]}
    with pytest.raises(JobError, match="sensors outputs"):
        berg.batch.run(film, show_progress=False)


def test_predict_movie_refuses_an_eeg_model_with_the_reason(whole, tmp_path):
    from _support import ramp_video

    film = ramp_video(tmp_path / "film.mp4", 10, 10.0, size=(32, 32))
    with pytest.raises(IncompatibleModelError, match="sensors outputs .* no BOLD series"):
        berg.predict_movie(whole[1], film, tr=1.0, output=tmp_path / "bold.h5", show_progress=False)
    assert not (tmp_path / "bold.h5").exists()


@pytest.mark.parametrize("damage, words", [
    ("channels", "eeg.ch_names must be the card's 63 channels"),
    ("times", "eeg.times"),
    ("pca", "pca_param must hold one PCA"),
    ("repetitions", "reg_param must hold rep-1, rep-2, rep-3, rep-4"),
])
def test_damaged_files_are_typed_errors(tmp_path, damage, words):
    from _berg_producer import save_pickled

    card = _write_card(tmp_path)
    model_dir = tmp_path.joinpath(*MODEL_DIR)
    files = write_eeg_tree(model_dir, card, [1], _features([1], n_train=12))
    weights, meta = (files[f"{d}_subject-01.npy"] for d in ("encoding_models_weights/weights", "metadata/metadata"))
    if damage == "channels":
        meta["eeg"]["ch_names"] = CHANNELS[:-1] + ["Fz"]
    elif damage == "times":
        meta["eeg"]["times"] = meta["eeg"]["times"] * 2
    elif damage == "pca":
        weights["pca_param"] = {"components": weights["pca_param"]["components_"]}
    else:
        del weights["reg_param"]["rep-4"]
    for rel, obj in files.items():
        save_pickled(model_dir / rel, obj)
    with pytest.raises(ModelFormatError, match=words):
        berg.get_encoding_model(TEST_ID, subject=1, device="cpu", backbone_weights=None, berg_dir=tmp_path)


def test_stored_channels_in_another_order_are_put_in_the_cards(tmp_path, images, features):
    card = _write_card(tmp_path)
    shuffled = list(np.random.default_rng(0).permutation(CHANNELS))
    files = write_eeg_tree(tmp_path.joinpath(*MODEL_DIR), card, [1], _features([1]), channel_order=shuffled)
    model = berg.get_encoding_model(TEST_ID, subject=1, device="cpu", backbone_weights=None, berg_dir=tmp_path)
    out = berg.encode(model, images, show_progress=False)
    assert _relative_error(out, reference_responses(files, 1, features, CHANNELS)) <= 1e-5


@pytest.mark.slow  # full width: 460,800 features, 250 components, BERG's README lines
def test_bergs_readme_lines_on_the_packaged_card_at_full_width(tmp_path, images, monkeypatch):
    import berg.backbones

    berg_dir = tmp_path / "brain-encoding-response-generator"
    card = berg.BERG(berg_dir).describe(MODEL_ID)
    width = 12 * 50 * 768
    feats = _features([1], width=width, n_train=260, seed=3)
    files = write_eeg_tree(berg_dir.joinpath(*MODEL_DIR), type("Card", (), {"data": card})(), [1], feats)
    del feats
    # ImageNet weights cannot be fetched here: the published weights resolve to the seeded untrained backbone
    resolve = berg.backbones.resolve_weights
    monkeypatch.setattr(berg.backbones, "resolve_weights", lambda card, weights, verify_hash=True: resolve(card, None))
    monkeypatch.setenv("BERG_OFFLINE", "1")  # BERG's files are in place: nothing is fetched
    namespace = {"images": images[:2]}
    exec(f"""
from berg import BERG

berg = BERG(berg_dir={str(berg_dir)!r})
eeg_model = berg.get_encoding_model("eeg-things_eeg_2-vit_b_32",
                                    subject=1,
                                    device="auto")
insilico_eeg = berg.encode(eeg_model,
                          images)
""", namespace)
    out = namespace["insilico_eeg"]
    expected = reference_responses(files, 1, vit_features(images[:2], card["backbone"]["return_nodes"]), CHANNELS)
    assert out.shape == (2, 4, 63, 140)
    assert _relative_error(out, expected) <= 1e-5
