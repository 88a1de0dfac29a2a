"""Model cards: the packaged ones validate; schema errors name the file and the field."""

import numpy as np
import pytest
import yaml
from _support import ROIS, Wheel, packaged_card_data

from berg.cards import load_card, packaged_cards
from berg.errors import ModelCardError


def test_packaged_cards_validate():
    cards = {c.model_id: c for c in packaged_cards()}
    assert set(cards) == {"fmri-bmd-s3d", "fmri-bold5000-resnet18"}
    bold = cards["fmri-bold5000-resnet18"]
    assert bold.subjects == [1, 2, 3] and bold.has_group and bold.data["preprocessing"]["crop"] is None
    for card in cards.values():  # each subject has a voxel count and nothing else does
        assert sorted(card.data["n_voxels"]) == card.subjects, card.model_id


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
