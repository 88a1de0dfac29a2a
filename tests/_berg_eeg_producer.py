"""A BERG THINGS EEG2 model tree made the way BERG's creation code makes one, with our own code.

The procedure of BERG's ``02_train_encoding_models/train_dataset-things_eeg_2/model-vit_b_32/train_encoding.py``
and ``03_test_encoding_models/train_dataset-things_eeg_2/01_test_encoding.py``, on synthetic data:

1. per subject (seed 20200220 + subject): features of the train and test images -> scikit-learn
   ``StandardScaler`` fit on train -> ``PCA(n_components, random_state=seed)`` fit on the scaled train features
   (layout ``"shared"``), or one such PCA per repetition (layout ``"per-repetition"``, BERG's newer files; here each
   is fitted on a different random 80 % of the train images, so that they differ); PCA features cast to float32;
2. one ``LinearRegression`` per repetition from the PCA features to that repetition's train EEG, reshaped
   channel-major to (n_images, n_channels * n_times);
3. the attributes saved as BERG's ``weights_subject-SS.npy`` dict with ``np.save``;
4. test accuracy: per channel and time, Pearson r between the test EEG (averaged over its repetitions) and the
   prediction averaged over the model's repetitions, and each repetition's own; with the channel names, times
   (-0.1 s in 5 ms steps, as MNE's epochs resampled to 200 Hz give them) and the image lists, saved as BERG's
   ``metadata_subject-SS.npy`` dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from _berg_producer import _pearson_columns, pca_dict, save_pickled, scaler_dict

LAYOUTS = ("shared", "per-repetition")


def _image_info(split: str, n: int) -> dict[str, Any]:
    """THINGS EEG2's image lists: concept names as a list, file names as a numpy string array."""
    concepts = [f"{i + 1:05d}_concept{i}" for i in range(n)]
    return {f"{split}_img_concepts": concepts, f"{split}_img_concepts_THINGS": [c.split("_", 1)[1] for c in concepts],
            f"{split}_img_files": np.array([f"concept{i}_{i:02d}s.jpg" for i in range(n)])}


def write_eeg_tree(model_dir: Path, card: Any, subjects: list[int], features: dict[int, dict[str, np.ndarray]],
                   layout: str = "shared", channel_order: list[str] | None = None) -> dict[str, Any]:
    """Write BERG's files for ``subjects`` under ``model_dir``; ``features[s]`` has ``train`` and ``test`` arrays
    (n, width). ``channel_order`` is the order of the stored channels (default the card's). Returns the saved
    dicts by relative path."""
    space = card.data["space"]
    k = card.data["readout"]["n_components"]
    channels = list(channel_order or space["channels"])
    n_rep, n_ch, n_t = space["repetitions"], len(channels), space["times"]["count"]
    times = np.round(space["times"]["start"] + space["times"]["step"] * np.arange(n_t), 10)
    files: dict[str, Any] = {}
    for s in subjects:
        seed = 20200220 + s
        rng = np.random.default_rng(seed)
        train, test = features[s]["train"], features[s]["test"]
        scaler = StandardScaler().fit(train)
        scaled_train, scaled_test = scaler.transform(train), scaler.transform(test)
        if layout == "shared":
            pcas = [PCA(n_components=k, random_state=seed).fit(scaled_train)] * n_rep
        else:
            pcas = [PCA(n_components=k, random_state=seed).fit(
                scaled_train[rng.choice(len(train), int(0.8 * len(train)), replace=False)]) for _ in range(n_rep)]
        eeg_test = rng.normal(0, 1, (len(test), n_ch, n_t))
        reg_param, prediction = {}, np.zeros((len(test), n_rep, n_ch, n_t))
        for r, pca in enumerate(pcas):
            pca_train = pca.transform(scaled_train).astype(np.float32)
            pca_test = pca.transform(scaled_test).astype(np.float32)
            mapping = rng.normal(0, 1, (k, n_ch * n_t))
            eeg_train = pca_train @ mapping + rng.normal(0, 1, (len(train), n_ch * n_t))
            reg = LinearRegression().fit(pca_train, eeg_train)
            reg_param[f"rep-{r + 1}"] = {"coef_": reg.coef_, "intercept_": reg.intercept_,
                                         "n_features_in_": reg.n_features_in_}
            prediction[:, r] = reg.predict(pca_test).reshape(-1, n_ch, n_t)
            eeg_test += 0.5 * prediction[:, r] / n_rep
        averaged = _pearson_columns(eeg_test.reshape(len(test), -1), prediction.mean(1).reshape(len(test), -1))
        single = np.stack([_pearson_columns(eeg_test.reshape(len(test), -1), prediction[:, r].reshape(len(test), -1))
                           for r in range(n_rep)])
        pca_param = (pca_dict(pcas[0]) if layout == "shared"
                     else {f"rep-{r + 1}": pca_dict(p) for r, p in enumerate(pcas)})
        files[f"encoding_models_weights/weights_subject-{s:02d}.npy"] = {
            "scaler_param": scaler_dict(scaler), "pca_param": pca_param, "reg_param": reg_param}
        files[f"metadata/metadata_subject-{s:02d}.npy"] = {
            "eeg": {"ch_names": channels, "times": times},
            "encoding_models": {"correlation_averaged_repetitions": averaged.reshape(n_ch, n_t),
                                "correlation_single_repetitions": single.reshape(n_rep, n_ch, n_t),
                                "train_img_info": _image_info("train", len(train)),
                                "test_img_info": _image_info("test", len(test))}}
    for rel, obj in files.items():
        save_pickled(model_dir / rel, obj)
    return files


def reference_responses(files: dict[str, Any], subject: int, features: np.ndarray, card_channels: list[str]
                        ) -> np.ndarray:
    """BERG's chain in float64 on the tree's own arrays: scaler -> each repetition's PCA (centred) -> its
    regression; (n, width) -> (n, repetitions, channels in the card's order, times)."""
    w = files[f"encoding_models_weights/weights_subject-{subject:02d}.npy"]
    stored = files[f"metadata/metadata_subject-{subject:02d}.npy"]["eeg"]["ch_names"]
    order = [stored.index(c) for c in card_channels]
    scaled = (features.astype(np.float64) - w["scaler_param"]["mean_"]) / w["scaler_param"]["scale_"]
    reps = []
    for r, reg in enumerate(w["reg_param"][f"rep-{i + 1}"] for i in range(len(w["reg_param"]))):
        pca = w["pca_param"] if "components_" in w["pca_param"] else w["pca_param"][f"rep-{r + 1}"]
        z = (scaled - pca["mean_"]) @ pca["components_"].astype(np.float64).T
        y = z @ reg["coef_"].T + reg["intercept_"]
        reps.append(y.reshape(len(features), len(stored), -1)[:, order])
    return np.stack(reps, axis=1)
