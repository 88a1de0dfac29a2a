"""Model cards: the packaged ones validate; schema errors name the file and the field."""

import copy

import pytest
import yaml

from berg.cards import load_card, packaged_cards
from berg.errors import ModelCardError

REFERENCE_COUNTS = [108219, 108603, 108366, 108283, 108201, 108449, 108126, 108407, 108250, 107987]


def test_packaged_cards_validate_and_match_reference():
    cards = {c.model_id: c for c in packaged_cards()}
    assert set(cards) == {"fmri-bmd-s3d", "fmri-bold5000-resnet18"}
    bmd = cards["fmri-bmd-s3d"].data
    assert [bmd["n_voxels"][s] for s in range(1, 11)] == REFERENCE_COUNTS
    assert len(bmd["rois"]) == 47 and "lhV4" in bmd["rois"] and "BMDgeneral" in bmd["rois"]
    assert sum(int(__import__("numpy").prod(s)) for s in bmd["backbone"]["feature_shapes"].values()) == 4_084_096
    bold = cards["fmri-bold5000-resnet18"]
    assert bold.subjects == [1, 2, 3] and bold.has_group and bold.data["preprocessing"]["crop"] is None


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["backbone"].pop("weights"), "backbone"),
    (lambda d: d.update(modality="meg"), "modality"),
    (lambda d: d["preprocessing"].update(mean=[0.1, 0.2]), "preprocessing.mean"),
    (lambda d: d.update(extra_field=1), "(top level)"),
    (lambda d: d["stimulus"].pop("n_frames"), "stimulus.n_frames"),
    (lambda d: d["n_voxels"].update({11: 5}), "n_voxels"),
])
def test_schema_errors_name_file_and_field(tmp_path, edit, field):
    data = copy.deepcopy(next(c.data for c in packaged_cards() if c.model_id == "fmri-bmd-s3d"))
    edit(data)
    path = tmp_path / "broken-card.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelCardError) as info:
        load_card(path)
    assert str(path) in str(info.value) and f"'{field}'" in str(info.value)
