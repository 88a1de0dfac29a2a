"""Model cards: the packaged ones validate; schema errors name the file and the field."""

import os

import numpy as np
import pytest
import yaml
from _support import ROIS, Wheel, packaged_card_data

from berg.cards import load_card, packaged_cards
from berg.errors import ModelCardError


def test_packaged_cards_validate():
    cards = {c.model_id: c for c in packaged_cards()}
    assert set(cards) == {"fmri-bmd-s3d", "fmri-bold5000-resnet18", "fmri-nsd_fsaverage-vit_b_32",
                          "eeg-things_eeg_2-vit_b_32", "fmri-nsd-fwrf"}
    bold = cards["fmri-bold5000-resnet18"]
    assert bold.subjects == [1, 2, 3] and bold.has_group and bold.data["preprocessing"]["crop"] is None
    for card in cards.values():  # each subject of a volume model has a voxel count and nothing else does
        if card.space.kind == "volume" and card.backbone.adapter is None:  # fwRF: one count per ROI, in its files
            assert sorted(card.data["n_voxels"]) == card.subjects, card.model_id
        else:
            assert "n_voxels" not in card.data, card.model_id
    assert cards["fmri-nsd_fsaverage-vit_b_32"].space.space.n_outputs(cards["fmri-nsd_fsaverage-vit_b_32"], 1) is None
    eeg = cards["eeg-things_eeg_2-vit_b_32"]  # the card alone gives the sensor grid: 4 x 63 x 140
    assert eeg.space.space.n_outputs(eeg, 1) == 4 * 63 * 140 and len(set(eeg.space.space.channels)) == 63


def test_img2fmri_voxel_counts_are_the_wheels_masks(img2fmri_wheel):
    """The card's counts against the data they describe: the union of each subject's ten ROI masks in the wheel.

    (fmri-bmd-s3d's counts can only be checked against BERG's metadata files, which the tests do not have; its
    feature sizes are checked against the built S3D in test_s3d.py.)"""
    card = packaged_card_data("fmri-bold5000-resnet18")
    wheel = Wheel(img2fmri_wheel)
    for subject in card["subjects"]:
        union = np.logical_or.reduce([wheel.mask(subject, side + roi) for roi in ROIS for side in ("LH", "RH")])
        assert card["n_voxels"][subject] == int(union.sum()), subject


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["backbone"].pop("weights"), "backbone"),
    (lambda d: d.update(modality="meg"), "modality"),
    (lambda d: d["preprocessing"].update(mean=[0.1, 0.2]), "preprocessing.mean"),
    (lambda d: d.update(extra_field=1), "(top level)"),
    (lambda d: d["stimulus"].pop("n_frames"), "stimulus.n_frames"),
    (lambda d: d["n_voxels"].update({11: 5}), "n_voxels"),
])
def test_schema_errors_name_file_and_field(tmp_path, edit, field):
    data = packaged_card_data("fmri-bmd-s3d")
    edit(data)
    path = tmp_path / "broken-card.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelCardError) as info:
        load_card(path)
    assert str(path) in str(info.value) and f"'{field}'" in str(info.value)


def test_typed_fields_are_parsed_from_the_yaml():
    cards = {c.model_id: c for c in packaged_cards()}
    bmd, bold = cards["fmri-bmd-s3d"], cards["fmri-bold5000-resnet18"]
    assert bmd.backbone.n_features == 4_084_096 and bmd.backbone.feature_sizes["avgpool"] == 1024
    assert list(bmd.backbone.feature_sizes) == list(bmd.backbone.return_nodes)
    assert bmd.format == "berg-legacy" and bmd.has_projection and bmd.readout.n_components == 100
    assert bmd.stimulus.n_frames == 14 and bmd.space.volume_shape == (62, 77, 61) and bmd.space.name == "MNI152NLin2009cAsym" and bmd.space.kind == "volume"
    assert bmd.source("s3").bucket == "brain-encoding-response-generator" and bmd.source("pypi-wheel") is None
    assert bold.format == "img2fmri-wheel" and not bold.has_projection and bold.stimulus.n_frames is None
    assert bold.group.kind == "mni-warp-sum" and bold.group.rois == ("EarlyVis", "OPA", "LOC", "RSC", "PPA")
    assert bold.source("pypi-wheel").filename == "img2fmri-1.0-py3-none-any.whl"
    assert bold.preprocessing.resize_backend == "pil" and bold.preprocessing.crop is None


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["readout"].pop("n_components"), "readout.n_components"),
    (lambda d: d.update(format="zip"), "format"),
    (lambda d: d.update(group={"kind": "unknown", "template": "MNI152", "rois": ["lV1v"]}), "group.kind"),
    (lambda d: d["sources"][0].pop("bucket"), "sources.0"),
    (lambda d: d["backbone"].update(architecture="Not A Name"), "backbone.architecture"),
])
def test_typed_sections_are_checked(tmp_path, edit, field):
    data = next(c for c in packaged_cards() if c.model_id == "fmri-bmd-s3d").to_dict()
    edit(data)
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelCardError) as info:
        load_card(path)
    assert f"'{field}'" in str(info.value)


def test_cards_are_parsed_once_and_a_changed_card_again(tmp_path, monkeypatch):
    from berg import cards as cards_module, registry

    data = next(c for c in packaged_cards() if c.model_id == "fmri-bmd-s3d").to_dict()
    data.update(model_id="fmri-mine-s3d", description="first")
    folder = tmp_path / "model_cards"
    folder.mkdir()
    path = folder / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    first = registry.get_card("fmri-mine-s3d", tmp_path)
    parsed = []
    monkeypatch.setattr(cards_module, "validate_card", lambda *a: parsed.append(a) or pytest.fail("parsed again"))
    assert registry.get_card("fmri-mine-s3d", tmp_path) is first
    assert registry.get_card("fmri-bmd-s3d", tmp_path) is registry.get_card("fmri-bmd-s3d")
    monkeypatch.undo()
    data["description"] = "second"
    path.write_text(yaml.safe_dump(data))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert registry.get_card("fmri-mine-s3d", tmp_path).description == "second"


@pytest.mark.parametrize("backbone, message", [
    ({"architecture": "alexnet", "weights": "AlexNet_Weights.IMAGENET1K_V1"}, None),
    ({"architecture": "alexnet", "weights": "ResNet18_Weights.IMAGENET1K_V1"}, "AlexNet_Weights.IMAGENET1K_V1"),
    ({"architecture": "no_such_net", "weights": "AlexNet_Weights.IMAGENET1K_V1"}, "no_such_net"),
])
def test_any_torchvision_builder_is_resolved_by_name(backbone, message):
    from berg.backbones import published_weights
    from berg.cards import validate_card
    from berg.errors import BackboneWeightsError

    data = next(c for c in packaged_cards() if c.model_id == "fmri-bold5000-resnet18").to_dict()
    data["backbone"].update(backbone)
    card = validate_card(data, "<card>")
    if message is None:
        assert published_weights(card).url.endswith(".pth") and type(published_weights(card)).__name__ == \
            "AlexNet_Weights"
    else:
        with pytest.raises(BackboneWeightsError, match=message):
            published_weights(card)
