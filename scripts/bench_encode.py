"""End-to-end ``berg.encode`` against the backbone alone, for images (ResNet-18) and clips (S3D).

The backbone-alone side runs torchvision's model on tensors preprocessed before the clock starts, with the same
batch size; berg's side starts from uint8 arrays and includes decoding, preprocessing, the readout and the copy
into the output. The ratio berg / backbone is berg's overhead over the physical floor. Both use untrained
backbones (the same arithmetic as trained ones). Images also run at N and 2N to show time grows linearly.
Run ``python scripts/bench_encode.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import berg
from berg.storage.synthetic import write_synthetic_model


REPEATS = 3  # best of, interleaved: the two sides see the same machine state


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _best_of(ours, alone) -> tuple[float, float]:
    """Best-of-REPEATS times of two interleaved callables (after one warm-up call of each)."""
    ours(), alone()
    times = [(_timed(ours), _timed(alone)) for _ in range(REPEATS)]
    return min(t[0] for t in times), min(t[1] for t in times)


def _alone(net: torch.nn.Module, inputs: torch.Tensor, batch_size: int):
    def run():
        with torch.inference_mode():
            for i in range(0, len(inputs), batch_size):
                net(inputs[i:i + batch_size])
    return run


def _image_model(berg_dir: Path):
    from berg.storage.img2fmri import import_img2fmri

    import_img2fmri(berg_dir)
    return berg.get_encoding_model("fmri-bold5000-resnet18", subject=1, device="cpu", backbone_weights=None,
                                   berg_dir=berg_dir)


def bench_images(berg_dir: Path, n: int, batch_size: int = 32) -> list[dict]:
    """Encode ``n`` and ``2n`` 256x256 images; the backbone alone on the same preprocessed batches."""
    model = _image_model(berg_dir)
    images = np.random.default_rng(0).integers(0, 256, size=(2 * n, 256, 256, 3), dtype=np.uint8)
    inputs = model.extractor.prepare(torch.from_numpy(images[:n]).permute(0, 3, 1, 2))
    ours, alone = _best_of(lambda: berg.encode(model, images[:n], batch_size=batch_size),
                           _alone(torchvision.models.resnet18().eval(), inputs, batch_size))
    ours_n, ours_2n = _best_of(lambda: berg.encode(model, images[:n], batch_size=batch_size),
                               lambda: berg.encode(model, images, batch_size=batch_size))
    size = f"{n} images 256x256, batch {batch_size}, {model.n_outputs} voxels"
    return [
        {"scenario": "encode images", "variant": "berg.encode (fmri-bold5000-resnet18)", "size": size,
         "seconds": ours, "throughput": f"{n / ours:.1f} images/s", "ratio": ours / alone,
         "ratio_meaning": "berg / backbone alone (target <= 1.15)"},
        {"scenario": "encode images", "variant": "torchvision ResNet-18 alone", "size": size, "seconds": alone,
         "throughput": f"{n / alone:.1f} images/s"},
        {"scenario": "encode images", "variant": f"berg.encode, 2N = {2 * n}", "size": size, "seconds": ours_2n,
         "ratio": ours_2n / ours_n, "ratio_meaning": "time(2N) / time(N) (linear: about 2)"},
    ]


def bench_clips(berg_dir: Path, n: int, batch_size: int = 2, n_components: int = 100) -> list[dict]:
    """Encode ``n`` 45-frame 240x320 clips through fmri-bmd-s3d (synthetic weights, real width)."""
    write_synthetic_model(berg_dir, "fmri-bmd-s3d", subject=1, n_components=n_components)
    model = berg.get_encoding_model("fmri-bmd-s3d", subject=1, device="cpu", backbone_weights=None,
                                    berg_dir=berg_dir)
    clips = np.random.default_rng(0).integers(0, 256, size=(n, 45, 240, 320, 3), dtype=np.uint8)
    frames = torch.from_numpy(clips[:, np.linspace(0, 44, 14).astype(int)]).permute(0, 1, 4, 2, 3)
    inputs = model.extractor.prepare(frames)
    ours, alone = _best_of(lambda: berg.encode(model, clips, batch_size=batch_size),
                           _alone(torchvision.models.video.s3d().eval(), inputs, batch_size))
    size = f"{n} clips 45x240x320, batch {batch_size}, {n_components} x 4,084,096 projection, {model.n_outputs:,} voxels"
    return [
        {"scenario": "encode clips", "variant": "berg.encode (fmri-bmd-s3d)", "size": size, "seconds": ours,
         "throughput": f"{n / ours:.2f} clips/s", "ratio": ours / alone,
         "ratio_meaning": "berg / backbone alone (target <= 1.15)"},
        {"scenario": "encode clips", "variant": "torchvision S3D alone", "size": size, "seconds": alone,
         "throughput": f"{n / alone:.2f} clips/s"},
    ]


def run(quick: bool = False) -> list[dict]:
    """Both scenarios in temporary model folders; returns table rows."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_images(Path(tmp), 64 if quick else 256)
        rows += bench_clips(Path(tmp), 4 if quick else 12)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 images and 4 clips")
    for row in run(parser.parse_args().quick):
        print(json.dumps(row))
