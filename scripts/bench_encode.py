"""End-to-end ``berg.encode`` against the backbone alone, for images (ResNet-18, ViT-B/32) and clips (S3D).

The backbone-alone side runs torchvision's model on tensors preprocessed before the clock starts, with the same
batch size, on the same device; berg's side starts from uint8 arrays and includes preprocessing, the readout and
the copy into the output. The ratio berg / backbone is berg's distance from its floor. Both use untrained
backbones (the same arithmetic as trained ones). Images also run at N and 2N to show time grows linearly; clips
also run with the readout applied per backbone batch (``readout_mb`` of one batch) to show what readout batching
saves, and the readout alone is timed per clip. All sides of a scenario are interleaved, best of three.
Run ``python scripts/bench_encode.py [--quick] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from benchutil import best_of, device_name

import berg
from berg.backbones import build_backbone
from berg.readout import DEFAULT_READOUT_MB, readout_capacity
from berg.storage.synthetic import write_synthetic_model


def _target(device: torch.device) -> str:
    return "<= 1.05" if device.type == "cuda" else "<= 1.15"


def _alone(net: torch.nn.Module, inputs: torch.Tensor, batch_size: int):
    def run():
        with torch.inference_mode():
            for i in range(0, len(inputs), batch_size):
                net(inputs[i:i + batch_size])
    return run


def _image_model(berg_dir: Path, device: str):
    from berg.storage.img2fmri import import_img2fmri

    import_img2fmri(berg_dir)
    return berg.get_encoding_model("fmri-bold5000-resnet18", subject=1, device=device, backbone_weights=None,
                                   berg_dir=berg_dir)


def bench_images(berg_dir: Path, n: int, batch_size: int = 32, device: str = "cpu") -> list[dict]:
    """Encode ``n`` and ``2n`` 256x256 images; the backbone alone on the same preprocessed batches."""
    model = _image_model(berg_dir, device)
    images = np.random.default_rng(0).integers(0, 256, size=(2 * n, 256, 256, 3), dtype=np.uint8)
    inputs = model.extractor.prepare(torch.from_numpy(images[:n]).permute(0, 3, 1, 2)).to(model.device)
    net = build_backbone(model.card, None).to(model.device)  # the same (seeded, untrained) weights as berg's
    t = best_of({"berg": lambda: berg.encode(model, images[:n], batch_size=batch_size),
                 "alone": _alone(net, inputs, batch_size),
                 "berg_2n": lambda: berg.encode(model, images, batch_size=batch_size)})
    size = f"{n} images 256x256, batch {batch_size}, {model.n_outputs} voxels"
    common = {"scenario": "encode images", "size": size, "device": device_name(model.device)}
    return [
        {**common, "variant": "berg.encode (fmri-bold5000-resnet18)", "seconds": t["berg"],
         "throughput": f"{n / t['berg']:.1f} images/s", "ratio": t["berg"] / t["alone"],
         "ratio_meaning": "berg / backbone alone", "target": _target(model.device)},
        {**common, "variant": "torchvision ResNet-18 alone", "seconds": t["alone"],
         "throughput": f"{n / t['alone']:.1f} images/s"},
        {**common, "variant": f"berg.encode, 2N = {2 * n}", "seconds": t["berg_2n"], "ratio": t["berg_2n"] / t["berg"],
         "ratio_meaning": "time(2N) / time(N) (linear: 2)", "target": "<= 2.1"},
    ]


def bench_clips(berg_dir: Path, n: int, batch_size: int = 2, n_components: int = 100, device: str = "cpu"
                ) -> list[dict]:
    """Encode ``n`` 45-frame 240x320 clips through fmri-bmd-s3d (synthetic weights, real width)."""
    write_synthetic_model(berg_dir, "fmri-bmd-s3d", subject=1, n_components=n_components)
    model = berg.get_encoding_model("fmri-bmd-s3d", subject=1, device=device, backbone_weights=None,
                                    berg_dir=berg_dir)
    clips = np.random.default_rng(0).integers(0, 256, size=(n, 45, 240, 320, 3), dtype=np.uint8)
    frames = torch.from_numpy(clips[:, np.linspace(0, 44, 14).astype(int)]).permute(0, 1, 4, 2, 3)
    inputs = model.extractor.prepare(frames).to(model.device)
    per_batch_mb = batch_size * model.readout.bytes_per_stimulus / 2**20
    capacity = readout_capacity(model.readout, DEFAULT_READOUT_MB)
    rows = min(capacity, n)  # the readout batch encode applies for n clips
    with torch.inference_mode():
        features = model.extractor.extract(inputs[:1], prepared=True)
    gathered = {k: v.expand(rows, *v.shape[1:]).contiguous() for k, v in features.items()}
    alone = {k: v.expand(batch_size, *v.shape[1:]).contiguous() for k, v in features.items()}
    net = build_backbone(model.card, None).to(model.device)
    with torch.inference_mode():
        t = best_of({"berg": lambda: berg.encode(model, clips, batch_size=batch_size),
                     "per_batch": lambda: berg.encode(model, clips, batch_size=batch_size, readout_mb=per_batch_mb),
                     "alone": _alone(net, inputs, batch_size),
                     "readout_gathered": lambda: model.readout(gathered),
                     "readout_per_batch": lambda: model.readout(alone)})
    size = (f"{n} clips 45x240x320, batch {batch_size}, {n_components} x 4,084,096 projection, "
            f"{model.n_outputs:,} voxels")
    common = {"scenario": "encode clips", "size": size, "device": device_name(model.device)}
    return [
        {**common, "variant": f"berg.encode (fmri-bmd-s3d), readout batches of up to {capacity} clips",
         "seconds": t["berg"], "throughput": f"{n / t['berg']:.2f} clips/s", "ratio": t["berg"] / t["alone"],
         "ratio_meaning": "berg / backbone alone", "target": _target(model.device)},
        {**common, "variant": f"berg.encode, readout per backbone batch of {batch_size}", "seconds": t["per_batch"],
         "throughput": f"{n / t['per_batch']:.2f} clips/s", "ratio": t["per_batch"] / t["alone"],
         "ratio_meaning": "berg / backbone alone, without readout batching"},
        {**common, "variant": "torchvision S3D alone", "seconds": t["alone"], "throughput": f"{n / t['alone']:.2f} clips/s"},
        {**common, "variant": f"readout alone per clip, batch of {rows}", "seconds": t["readout_gathered"] / rows},
        {**common, "variant": f"readout alone per clip, batch of {batch_size}", "seconds": t["readout_per_batch"] / batch_size},
    ]


VIT_MODELS = {"fmri-nsd_fsaverage-vit_b_32": "vertices", "eeg-things_eeg_2-vit_b_32": "sensor samples"}


def bench_vit(berg_dir: Path, n: int, batch_size: int = 16, device: str = "cpu",
              model_id: str = "fmri-nsd_fsaverage-vit_b_32", n_components: int = 250) -> list[dict]:
    """Encode ``n`` 300x400 images through a ViT-B/32 model of BERG (synthetic weights at full size: an
    ``n_components`` x 460,800 projection; 2 x 163,842 vertices or 4 x 63 x 140 sensor samples) against ViT-B/32
    alone on the same preprocessed batches. ``n_components`` 1000 is the EEG model's newer layout (one 250-component
    PCA per repetition, stacked)."""
    write_synthetic_model(berg_dir, model_id, subject=1, n_components=n_components)
    model = berg.get_encoding_model(model_id, subject=1, device=device, backbone_weights=None, berg_dir=berg_dir)
    images = np.random.default_rng(0).integers(0, 256, size=(n, 300, 400, 3), dtype=np.uint8)
    inputs = model.extractor.prepare(torch.from_numpy(images).permute(0, 3, 1, 2)).to(model.device)
    net = build_backbone(model.card, None).to(model.device)
    t = best_of({"berg": lambda: berg.encode(model, images, batch_size=batch_size, show_progress=False),
                 "alone": _alone(net, inputs, batch_size)})
    common = {"scenario": f"encode images (ViT, {model_id})", "device": device_name(model.device),
              "size": f"{n} images 300x400, batch {batch_size}, {n_components} x 460,800 projection, "
                      f"{model.n_outputs:,} {VIT_MODELS[model_id]}"}
    return [
        {**common, "variant": f"berg.encode ({model_id})", "seconds": t["berg"],
         "throughput": f"{n / t['berg']:.1f} images/s", "ratio": t["berg"] / t["alone"],
         "ratio_meaning": "berg / backbone alone", "target": _target(model.device)},
        {**common, "variant": "torchvision ViT-B/32 alone", "seconds": t["alone"],
         "throughput": f"{n / t['alone']:.1f} images/s"},
    ]


def bench_fwrf(berg_dir: Path, n: int, batch_size: int = 32, device: str = "cpu") -> list[dict]:
    """fmri-nsd-fwrf on ``n`` 227x227 images (BERG's files as its creation code writes them, V1-V3 at NSD subject
    1's sizes): whole-ROI encode against the bare forward of the same GNet and fwRF modules on the same prepared
    batches, and one request of V1, V2 and V3 (three networks) against the sum of the three requests alone."""
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _berg_fwrf_producer import write_fwrf_tree

    card = berg.describe("fmri-nsd-fwrf")
    sizes = {"V1": 1350, "V2": 1433, "V3": 1187}
    write_fwrf_tree(berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-nsd" / "model-fwrf",
                    card["rois"], card["backbone"]["options"]["split_rois"], [1], sizes=sizes)
    def load(roi):
        return berg.get_encoding_model("fmri-nsd-fwrf", subject=1, selection={"roi": roi}, device=device,
                                       berg_dir=berg_dir)

    offline = os.environ.get("BERG_OFFLINE")
    os.environ["BERG_OFFLINE"] = "1"  # the files are in place: nothing is fetched
    try:
        models = {roi: load(roi) for roi in sizes}
        together = load(list(sizes))
    finally:
        if offline is None:
            del os.environ["BERG_OFFLINE"]
        else:
            os.environ["BERG_OFFLINE"] = offline
    images = np.random.default_rng(0).integers(0, 256, size=(n, 227, 227, 3), dtype=np.uint8)
    v1 = models["V1"]
    inputs = v1.extractor.prepare(torch.from_numpy(images).permute(0, 3, 1, 2)).to(v1.device)
    bare = torch.nn.Sequential(v1.extractor.body, v1.readout)
    t = best_of({"berg": lambda: berg.encode(v1, images, batch_size=batch_size, show_progress=False),
                 "alone": _alone(bare, inputs, batch_size),
                 "three": lambda: berg.encode(together, images, batch_size=batch_size, show_progress=False),
                 "parts": lambda: [berg.encode(m, images, batch_size=batch_size, show_progress=False)
                                   for m in models.values()]})
    common = {"scenario": "encode images (fwRF)", "device": device_name(v1.device),
              "size": f"{n} images 227x227, batch {batch_size}, V1 {sizes['V1']} voxels"}
    return [
        {**common, "variant": "berg.encode (fmri-nsd-fwrf, V1)", "seconds": t["berg"],
         "throughput": f"{n / t['berg']:.1f} images/s", "ratio": t["berg"] / t["alone"],
         "ratio_meaning": "berg / the same GNet and fwRF modules alone", "target": _target(v1.device)},
        {**common, "variant": "GNet + fwRF modules alone", "seconds": t["alone"]},
        {**common, "variant": "berg.encode of V1, V2, V3 in one request", "seconds": t["three"],
         "ratio": t["three"] / t["parts"], "ratio_meaning": "one request / the three requests alone",
         "target": "<= 1.05"},
        {**common, "variant": "V1, V2, V3 requested one by one", "seconds": t["parts"]},
    ]


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """The scenarios in temporary model folders; returns table rows."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_images(Path(tmp), 64 if quick else 256, device=device)
        rows += bench_clips(Path(tmp), 4 if quick else 12, device=device)
        for model_id in VIT_MODELS:
            rows += bench_vit(Path(tmp), 16 if quick else 64, device=device, model_id=model_id)
        rows += bench_vit(Path(tmp), 16 if quick else 64, device=device, model_id="eeg-things_eeg_2-vit_b_32",
                          n_components=1000)
        rows += bench_fwrf(Path(tmp), 8 if quick else 64, device=device)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 images and 4 clips")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    cli = parser.parse_args()
    for row in run(cli.quick, cli.device):
        print(json.dumps(row))
