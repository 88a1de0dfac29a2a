"""Cards and jobs from other people: YAML that cannot explode, paths that stay inside berg_dir, one bad card that
leaves the others usable, and an offline switch that creates nothing."""

import resource
import time

import numpy as np
import pytest
import yaml
from _support import packaged_card_data

import berg
import berg.batch
from berg._yaml import MAX_YAML_BYTES
from berg.cli import main
from berg.errors import JobError, ModelCardError, OfflineError
from berg.registry import get_card

# nine levels of ten aliases each: 10**9 list items if expanded
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


def _card_with(tmp_path, model_id: str, **changes) -> dict:
    card = packaged_card_data("fmri-bmd-s3d")
    card.update(model_id=model_id, **changes)
    (tmp_path / "model_cards").mkdir(parents=True, exist_ok=True)
    (tmp_path / "model_cards" / f"{model_id}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return card


def _files_under(folder) -> set:
    return {p for p in folder.rglob("*")}


def test_an_alias_bomb_card_is_refused_at_once_and_the_zoo_stays_usable(tmp_path):
    (tmp_path / "model_cards").mkdir()
    (tmp_path / "model_cards" / "bomb.yaml").write_text(f"model_id: bomb\n{BOMB}rois: *i\n")
    assert len((tmp_path / "model_cards" / "bomb.yaml").read_bytes()) < 1500
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    models = berg.list_models(berg_dir=tmp_path)
    with pytest.raises(ModelCardError, match=r"bomb\.yaml.*alias"):
        get_card("bomb", tmp_path)
    assert "fmri-bmd-s3d" in models and "bomb" not in models
    # bounded: nothing was expanded (an expansion takes gigabytes and tens of seconds)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
    assert time.process_time() - started < 10


def test_an_alias_bomb_job_is_a_job_error(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"output: out\n{BOMB}rows: *i\n")
    with pytest.raises(JobError, match="alias"):
        berg.batch.run(job, show_progress=False)
    tsv = tmp_path / "job.tsv"
    tsv.write_text("output\tstimuli\tmodel\tsubjects\nout\tx.png\tfmri-bmd-s3d\t*a\n")
    with pytest.raises(JobError, match="row 1.*alias"):
        berg.batch.run(tsv, show_progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, words", [
    ("rois: [" + "x, " * (MAX_YAML_BYTES // 3) + "x]\n", "larger than"),
    ("rois: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply"),
    ("rois: [unclosed\n", "not valid YAML"),
])
def test_oversized_deep_or_broken_cards_are_model_card_errors(tmp_path, text, words):
    (tmp_path / "model_cards").mkdir()
    (tmp_path / "model_cards" / "odd.yaml").write_text("model_id: odd\n" + text)
    with pytest.raises(ModelCardError, match=words):
        get_card("odd", tmp_path)


def test_one_invalid_card_leaves_the_others_and_is_named(tmp_path, capsys):
    _card_with(tmp_path, "fmri-mine-s3d")
    (tmp_path / "model_cards" / "broken.yaml").write_text("model_id: broken\nsubjects: many\n")
    assert main(["list", "--berg-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "fmri-mine-s3d" in out and "fmri-bmd-s3d" in out and "broken.yaml" in err
    with pytest.raises(ModelCardError, match="broken.yaml"):
        berg.get_encoding_model("broken", subject=1, berg_dir=tmp_path)
    # a broken card that overrides a packaged one is reported, not replaced by the packaged card
    (tmp_path / "model_cards" / "fmri-bmd-s3d.yaml").write_text("model_id: fmri-bmd-s3d\nsubjects: []\n")
    with pytest.raises(ModelCardError, match="fmri-bmd-s3d.yaml"):
        get_card("fmri-bmd-s3d", tmp_path)


@pytest.mark.parametrize("changes", [
    {"legacy_files": {"shared": ["/tmp/escaped.npy"], "subject": ["w_{SS}.npy"]}},
    {"legacy_files": {"shared": ["../../../../escaped.npy"], "subject": ["w_{SS}.npy"]}},
    {"legacy_files": {"shared": ["ok.npy"], "subject": ["sub/../../../escaped_{SS}.npy"]}},
    {"train_dataset": "x/../../../../../elsewhere"},
    {"model": ".."},
])
def test_paths_from_a_card_stay_inside_berg_dir(tmp_path, changes):
    berg_dir = tmp_path / "berg_dir"
    berg_dir.mkdir()
    _card_with(berg_dir, "fmri-evil-s3d", **changes)
    around = _files_under(tmp_path)
    with pytest.raises(ModelCardError, match="fmri-evil-s3d.yaml"):
        berg.download("fmri-evil-s3d", subjects=[1], berg_dir=berg_dir, endpoint_url="http://127.0.0.1:9")
    assert _files_under(tmp_path) == around  # nothing written anywhere


def test_offline_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("BERG_OFFLINE", "1")
    berg_dir = tmp_path / "fresh"
    for call in (lambda: berg.get_encoding_model("fmri-bmd-s3d", subject=1, berg_dir=berg_dir, device="cpu",
                                                 backbone_weights=None),
                 lambda: berg.download("fmri-bmd-s3d", subjects=[1], berg_dir=berg_dir)):
        with pytest.raises(OfflineError, match="BERG_OFFLINE"):
            call()
        assert not berg_dir.exists()


def test_a_symlink_out_of_the_model_folder_is_refused(tmp_path):
    berg_dir = tmp_path / "berg_dir"
    card = _card_with(berg_dir, "fmri-link-s3d", legacy_files={"shared": ["shared/p.npy"],
                                                             "subject": ["w_{SS}.npy"]})
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / f"train_dataset-{card['train_dataset']}" / \
        f"model-{card['model']}"
    model_dir.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (model_dir / "shared").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ModelCardError, match="outside the model folder"):
        berg.download("fmri-link-s3d", subjects=[1], berg_dir=berg_dir, endpoint_url="http://127.0.0.1:9")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_the_bomb_text_is_what_the_test_claims():
    """The fixture would prove nothing if PyYAML's own safe loader did not expand it (its first three levels)."""
    loaded = yaml.safe_load("".join(BOMB.splitlines(keepends=True)[:3]))
    assert len(loaded["c"]) == 10 and loaded["c"][0] == loaded["b"] and loaded["b"][0] == ["x"] * 10


def test_feature_shapes_that_do_not_match_the_backbone_are_a_card_error(tmp_path):
    """The card and its readout agree (2 features), the backbone does not (512): refused before a readout batch
    is sized from the card (with a large declared shape, that allocation is what would fail)."""
    from _support import write_space_model

    from berg.storage.native import readout_path, save_arrays

    write_space_model(tmp_path, "volume")
    path = tmp_path / "model_cards" / "toy-volume.yaml"
    card = yaml.safe_load(path.read_text())
    card["backbone"]["feature_shapes"] = {"avgpool": [2, 1, 1]}
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    model_dir = tmp_path / "encoding_models" / "modality-fmri" / "train_dataset-toy" / "model-volume"
    save_arrays(readout_path(model_dir, 1), {"weight": np.ones((12, 2), np.float32), "bias": np.zeros(12, np.float32)})
    model = berg.get_encoding_model("toy-volume", subject=1, device="cpu", backbone_weights=None, berg_dir=tmp_path)
    with pytest.raises(ModelCardError, match=r"feature_shapes.*avgpool: card \[2, 1, 1\], backbone \[512, 1, 1\]"):
        berg.encode(model, np.zeros((1, 32, 32, 3), np.uint8), show_progress=False)


def test_a_user_card_s_wheel_hash_is_the_one_checked(tmp_path, monkeypatch, img2fmri_wheel):
    from berg.errors import IntegrityError

    monkeypatch.setenv("BERG_OFFLINE", "1")
    card = packaged_card_data("fmri-bold5000-resnet18")
    card["sources"][0]["sha256"] = "0" * 64
    (tmp_path / "model_cards").mkdir()
    (tmp_path / "model_cards" / "fmri-bold5000-resnet18.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    with pytest.raises(IntegrityError, match="expected 0{64}"):
        berg.get_encoding_model("fmri-bold5000-resnet18", subject=1, berg_dir=tmp_path, device="cpu",
                                backbone_weights=None)


def test_an_unreachable_source_is_a_fetch_error(tmp_path):
    from berg.errors import FetchError

    with pytest.raises(FetchError, match=r"s3://brain-encoding-response-generator/.*could not be fetched from "
                                         r"http://127\.0\.0\.1:9"):
        berg.download("fmri-bmd-s3d", subjects=[1], berg_dir=tmp_path, endpoint_url="http://127.0.0.1:9",
                      show_progress=False)
