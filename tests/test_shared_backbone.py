"""One backbone pass for several subjects or models: the same responses as each model alone, one copy of a shared
projection, per-subject ``out=``, the readout memory bound, and requests checked before any file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import berg
from berg.errors import InvalidArgumentError, InvalidSubjectError
from berg.readout import readout_capacity
from berg.shared_backbone import SharedBackboneModel, backbone_key
from _support import write_test_model

IMG2FMRI = "fmri-bold5000-resnet18"


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, (7, 60, 80, 3), dtype=np.uint8)


def _load(model_id, subject, berg_dir, **options):
    return berg.get_encoding_model(model_id, subject=subject, device="cpu", backbone_weights=None, berg_dir=berg_dir,
                                   **options)


def test_img2fmri_subjects_from_one_pass_equal_each_subject_alone(img2fmri_model_dir, photos, monkeypatch):
    berg_dir = img2fmri_model_dir.parents[3]
    shared = _load(IMG2FMRI, [1, 2, 3], berg_dir)
    assert isinstance(shared, SharedBackboneModel) and list(shared.members) == [1, 2, 3]
    passes = []
    forward = type(shared.extractor).extract
    monkeypatch.setattr(type(shared.extractor), "extract",
                        lambda self, *a, **k: passes.append(1) or forward(self, *a, **k))
    together, metadata = berg.encode(shared, photos, batch_size=3, return_metadata=True, show_progress=False)
    assert len(passes) == 3  # 7 photos in batches of 3: one backbone pass per batch for all three subjects
    assert set(together) == set(metadata) == {1, 2, 3}
    for subject in (1, 2, 3):
        alone, meta = berg.encode(_load(IMG2FMRI, subject, berg_dir), photos, batch_size=3, return_metadata=True,
                                  show_progress=False)
        np.testing.assert_array_equal(together[subject], alone)  # bit-identical
        np.testing.assert_array_equal(metadata[subject]["voxel_ijk"], meta["voxel_ijk"])
        assert metadata[subject]["subject"] == subject
    assert len({id(m.extractor) for m in shared.members.values()}) == 1  # one backbone in memory
    everyone = _load(IMG2FMRI, "all", berg_dir, selection={"roi": "PPA"})
    assert list(everyone.members) == [1, 2, 3]
    roi = berg.encode(everyone, photos, show_progress=False)
    np.testing.assert_array_equal(roi[2], berg.encode(_load(IMG2FMRI, 2, berg_dir, selection={"roi": "PPA"}), photos,
                                                      show_progress=False))


def test_a_shared_projection_is_held_once_and_applied_once(tmp_path, photos):
    raw = write_test_model(tmp_path, "test-svd", n_components=8, subjects=(1, 2, 3))
    shared = _load("test-svd", [3, 1], tmp_path)
    readouts = [m.readout for m in shared.members.values()]
    assert readouts[0].blocks is readouts[1].blocks and readouts[0].weight is not readouts[1].weight
    calls = []
    project = type(readouts[0]).project
    type(readouts[0]).project = lambda self, f: calls.append(1) or project(self, f)
    try:
        together = berg.encode(shared, photos, show_progress=False)
    finally:
        type(readouts[0]).project = project
    assert len(calls) == 1  # one readout batch, the projection applied once for both subjects
    for subject in (3, 1):
        np.testing.assert_array_equal(together[subject], berg.encode(_load("test-svd", subject, tmp_path), photos,
                                                                     show_progress=False))
    assert raw["card"]["readout"]["kind"] == "scaler-svd-linear"


def test_out_per_subject_and_the_readout_memory_bound(tmp_path, photos):
    import h5py

    write_test_model(tmp_path, "test-svd", n_voxels=50, n_components=8, subjects=(1, 2))
    shared = _load("test-svd", [1, 2], tmp_path)
    d = sum(shared.card.backbone.feature_sizes.values())
    # features once, the shared projection once, both subjects' 50 voxels
    assert shared.readout.bytes_per_stimulus == 4 * (d + 8 + 2 * 50)
    assert readout_capacity(shared.readout, 1.0) == 2**20 // (4 * (d + 8 + 100))
    with h5py.File(tmp_path / "out.h5", "w") as h5:
        out = {s: h5.create_dataset(f"sub-{s}", shape=(len(photos), 50), dtype=np.float32) for s in (1, 2)}
        returned = berg.encode(shared, photos, out=out, readout_mb=0.2, show_progress=False)
        assert returned is not None and set(returned) == {1, 2}
        for s in (1, 2):
            alone = berg.encode(_load("test-svd", s, tmp_path), photos, show_progress=False)
            np.testing.assert_allclose(out[s][()], alone, rtol=1e-6, atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="one array per subject"):
        berg.encode(shared, photos, out=np.zeros((len(photos), 50), np.float32), show_progress=False)
    with pytest.raises(InvalidArgumentError, match=r"out\[2\] has shape \(7, 49\)"):
        berg.encode(shared, photos, out={1: np.zeros((7, 50), np.float32), 2: np.zeros((7, 49), np.float32)},
                    show_progress=False)


@pytest.mark.parametrize("subject, words", [
    ([], "a non-empty list"),
    ([1, 1], "names a subject twice"),
    ([1, 9], "valid subjects are 1, 2, 3"),
    ("everyone", "valid subjects are 1, 2, 3"),
])
def test_subject_lists_are_checked_before_any_file(tmp_path, subject, words):
    with pytest.raises(InvalidSubjectError, match=words):
        berg.get_encoding_model(IMG2FMRI, subject=subject, device="cpu", berg_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_models_with_other_backbones_are_not_joined(tmp_path):
    write_test_model(tmp_path, "test-a", subjects=(1,))
    a = _load("test-a", 1, tmp_path)
    b = berg.get_encoding_model("test-a", subject=1, device="cpu", backbone_weights=None, berg_dir=tmp_path,
                                precision="bfloat16")
    assert backbone_key(a) != backbone_key(b)
    with pytest.raises(InvalidArgumentError, match="do not share a backbone"):
        SharedBackboneModel({"a": a, "b": b})


def test_a_film_for_three_subjects_is_decoded_once_and_equals_each_alone(img2fmri_model_dir, tmp_path, monkeypatch):
    import berg.movie
    from berg.sinks import read_h5
    from _support import ramp_video

    berg_dir = img2fmri_model_dir.parents[3]
    film = ramp_video(tmp_path / "film.mp4", 40, 10.0, size=(48, 64))
    shared = _load(IMG2FMRI, [1, 2, 3], berg_dir)
    probes = []
    probe = berg.movie.probe
    monkeypatch.setattr(berg.movie, "probe", lambda video: probes.append(video) or probe(video))
    outputs = {s: [tmp_path / f"sub-{s}_bold.nii.gz", tmp_path / f"sub-{s}_bold.h5"] for s in (1, 2, 3)}
    results = berg.predict_movie(shared, film, tr=1.0, output=outputs, show_progress=False)
    assert len(probes) == 1 and set(results) == {1, 2, 3}
    for subject in (1, 2, 3):
        alone = berg.predict_movie(_load(IMG2FMRI, subject, berg_dir), film, tr=1.0, show_progress=False)
        np.testing.assert_array_equal(results[subject].bold, alone.bold)
        assert results[subject].metadata["subject"] == subject
        stored = read_h5(outputs[subject][1])
        np.testing.assert_array_equal(stored["samples"], alone.samples)
        np.testing.assert_array_equal(stored["bold"], alone.bold)
    with pytest.raises(InvalidArgumentError, match="a dict"):
        berg.predict_movie(shared, film, tr=1.0, output=tmp_path / "one.h5", show_progress=False)


@pytest.fixture(scope="module")
def vit_pair(tmp_path_factory):
    """A berg_dir with the reduced NSD-surface and THINGS-EEG cards (the same two ViT-B/32 layers) and BERG's files
    of subject 1 of each."""
    import test_nsd_surface as surface
    import test_things_eeg as eeg
    from _berg_eeg_producer import write_eeg_tree
    from _berg_surface_producer import write_surface_tree

    berg_dir = tmp_path_factory.mktemp("vit_pair")
    card = eeg._write_card(berg_dir)
    write_eeg_tree(berg_dir.joinpath(*eeg.MODEL_DIR), card, [1], eeg._features([1]))
    data = surface.packaged_card_data(surface.MODEL_ID)
    data.update(model_id=surface.TEST_ID, sources=[{"kind": "local"}])
    data["backbone"].update(return_nodes=surface.NODES, feature_shapes={n: [50, 768] for n in surface.NODES})
    data["readout"]["n_components"] = 6
    (berg_dir / "model_cards" / f"{surface.TEST_ID}.yaml").write_text(surface.yaml.safe_dump(data, sort_keys=False))
    features = eeg._features([1], seed=1)
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-nsd_fsaverage" / "model-vit_b_32"
    write_surface_tree(model_dir, type("Card", (), {"data": berg.BERG(berg_dir).describe(surface.TEST_ID)})(), [1],
                       features)
    return berg_dir, (surface.TEST_ID, eeg.TEST_ID)


def test_bergs_two_vit_models_share_one_pass_in_a_batch_job(vit_pair, tmp_path, monkeypatch):
    import berg.batch
    from berg.backbones import FeatureExtractor
    from berg.batch import execute
    from _support import read_outputs, write_photos

    berg_dir, models = vit_pair
    write_photos(tmp_path / "photos", 3)
    rows = [{"stimuli": str(tmp_path / "photos"), "model": m, "subjects": [1], "device": "cpu",
             "backbone_weights": "untrained"} for m in models]
    passes = []
    extract = FeatureExtractor.extract
    monkeypatch.setattr(FeatureExtractor, "extract", lambda self, *a, **k: passes.append(1) or extract(self, *a, **k))
    result = berg.batch.run({"output": str(tmp_path / "out"), "berg_dir": str(berg_dir), "rows": rows},
                            show_progress=False)
    assert result.ok and result.n_done == 2 and len(passes) == 1  # one ViT pass for both models
    outputs = read_outputs(tmp_path / "out")
    for model_id in models:
        alone = berg.get_encoding_model(model_id, subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
        expected = alone.predict(sorted((tmp_path / "photos").glob("*.png")))
        [key] = [k for k in outputs if label_of(model_id) in k]
        np.testing.assert_array_equal(outputs[key], expected)

    # a readout whose outputs cannot be written fails alone: the other model's outputs complete
    write = execute.write_columns

    def failing(h5, metadata):
        if metadata["model_id"] == models[1]:
            raise OSError("disk full while writing the columns")
        return write(h5, metadata)

    monkeypatch.setattr(execute, "write_columns", failing)
    again = berg.batch.run({"output": str(tmp_path / "out2"), "berg_dir": str(berg_dir), "rows": rows},
                           show_progress=False)
    assert (again.n_done, len(again.failures)) == (1, 1)
    assert label_of(models[1]) in again.failures[0]["unit"] and "disk full" in again.failures[0]["message"]
    assert len(list((tmp_path / "out2").rglob("*_responses.h5"))) == 1


def label_of(model_id: str) -> str:
    from berg.writers.bids import label

    return label(model_id)


def test_a_resumed_film_continues_each_subject_from_its_own_samples(img2fmri_model_dir, tmp_path):
    from berg.sinks import read_h5
    from _support import ramp_video

    berg_dir = img2fmri_model_dir.parents[3]
    film = ramp_video(tmp_path / "film.mp4", 100, 10.0, size=(48, 64))  # 10 s: 20 samples at 2 Hz
    outputs = {s: tmp_path / f"sub-{s}_bold.h5" for s in (1, 2)}

    def dies_after(model, n):
        """The model, answering one sample per block, stopped after ``n`` of them (a killed run)."""
        original = model.predict_staged

        def staged(batches, **options):
            for i, block in enumerate(original(batches, **{**options, "readout_mb": 1e-3})):
                if i == n:
                    raise KeyboardInterrupt
                yield block
        model.predict_staged = staged
        return model

    with pytest.raises(KeyboardInterrupt):  # subject 2 alone gets 5 samples in
        berg.predict_movie(dies_after(_load(IMG2FMRI, 2, berg_dir), 5), film, tr=1.0, output=outputs[2],
                           resume=True, show_progress=False)
    with pytest.raises(KeyboardInterrupt):  # both: subject 1 gets 3, subject 2 keeps its 5
        berg.predict_movie(dies_after(_load(IMG2FMRI, [1, 2], berg_dir), 3), film, tr=1.0, output=outputs,
                           resume=True, show_progress=False)
    results = berg.predict_movie(_load(IMG2FMRI, [1, 2], berg_dir), film, tr=1.0, output=outputs, resume=True,
                                 show_progress=False)
    for subject in (1, 2):
        alone = berg.predict_movie(_load(IMG2FMRI, subject, berg_dir), film, tr=1.0, show_progress=False)
        stored = read_h5(outputs[subject])
        np.testing.assert_array_equal(stored["sample_times"], alone.sample_times)
        np.testing.assert_allclose(stored["samples"], alone.samples, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results[subject].bold, alone.bold, rtol=1e-5, atol=1e-6)


def test_the_module_call_answers_every_member(tmp_path, photos):
    write_test_model(tmp_path, "test-svd", n_components=8, subjects=(1, 2))
    shared = _load("test-svd", [1, 2], tmp_path)
    prepared = shared.extractor.prepare(torch.from_numpy(photos).permute(0, 3, 1, 2))
    with torch.inference_mode():
        out = shared(prepared)
        for subject in (1, 2):
            alone = _load("test-svd", subject, tmp_path)
            torch.testing.assert_close(out[subject], alone(prepared), rtol=1e-6, atol=1e-6)
