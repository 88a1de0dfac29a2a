"""Readout batches gather backbone features across batches: responses unchanged, memory bounded by readout_mb."""

import numpy as np
import pytest
import torch

import berg
from berg.readout import FeatureBuffer, Readout, fold_scaler_projection, readout_capacity

NODE_DIMS = {"a": 2 * 3 * 4, "b.cat": 50, "c": 7}


def _projection_readout(n_out: int = 400, k: int = 10) -> Readout:
    rng = np.random.default_rng(0)
    d = sum(NODE_DIMS.values())
    blocks, bias = fold_scaler_projection(rng.normal(size=(k, d)), rng.normal(size=d), rng.uniform(0.5, 2, size=d),
                                          NODE_DIMS)
    return Readout(torch.from_numpy(rng.normal(size=(n_out, k))).float(), torch.from_numpy(rng.normal(size=n_out)).float(),
                   NODE_DIMS, {n: torch.from_numpy(b) for n, b in blocks.items()}, torch.from_numpy(bias))


class _Calls:
    """Records, for every readout call, its rows, the bytes of its features and where they live."""

    def __init__(self, readout: torch.nn.Module):
        self.rows, self.feature_bytes, self.pointers = [], [], set()
        readout.register_forward_pre_hook(self)

    def __call__(self, module, args):
        features = args[0]
        self.rows.append(next(iter(features.values())).shape[0])
        self.feature_bytes.append(sum(f.numel() * f.element_size() for f in features.values()))
        self.pointers.add(tuple(f.data_ptr() for f in features.values()))


def test_feature_buffer_equals_one_readout_over_everything():
    readout = _projection_readout()
    assert readout.weight is not None  # the two-stage regime: features -> 10 components -> 400 outputs
    rng = np.random.default_rng(1)
    sizes = [3, 1, 4, 2, 5]
    features = {"a": torch.randn(sum(sizes), 2, 3, 4), "b.cat": torch.randn(sum(sizes), 50),
                "c": torch.from_numpy(rng.normal(size=(sum(sizes), 7))).float()}
    want = readout(features).numpy()
    calls = _Calls(readout)
    buffer = FeatureBuffer(readout, capacity=4)
    blocks, start = [], 0
    for size in sizes:
        blocks += list(buffer.push({n: f[start:start + size] for n, f in features.items()}))
        start += size
    blocks.append(buffer.flush())
    got = torch.cat(blocks).numpy()
    assert calls.rows == [4, 4, 4, 3] and buffer.flush() is None
    assert len(calls.pointers) == 1  # one buffer, allocated once and reused: memory does not grow
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-6


def test_capacity_follows_the_bound():
    readout = _projection_readout(n_out=400, k=10)
    per_stimulus = 4 * (sum(NODE_DIMS.values()) + 10 + 400)
    assert readout.bytes_per_stimulus == per_stimulus
    assert readout_capacity(readout, 7 * per_stimulus / 2**20) == 7
    assert readout_capacity(readout, 1e-9) == 1  # one stimulus is always read out, however small the bound


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "big", True, None])
def test_bad_readout_mb(shared_model, images, value):
    with pytest.raises(berg.BergError, match=rf"readout_mb={value!r} is not valid: expected a finite number > 0 \(MiB\)"):
        berg.encode(shared_model, images[:1], readout_mb=value)


@pytest.mark.parametrize("n_components", [None, 8], ids=["ridge", "scaler-svd-linear"])
def test_encode_readout_batches_change_no_response(berg_dir, n_components):
    from _support import write_test_model

    write_test_model(berg_dir, n_components=n_components)
    model = berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    images = np.random.default_rng(2).integers(0, 256, size=(7, 64, 64, 3), dtype=np.uint8)
    unbatched = np.concatenate([model.predict(images[i:i + 1]) for i in range(len(images))])
    capacity = 3
    readout_mb = capacity * model.readout.bytes_per_stimulus / 2**20
    calls = _Calls(model.readout)
    written = []

    class Out(np.ndarray):  # an out= array that records the rows of every assignment
        def __setitem__(self, key, value):
            written.append(key.stop - key.start)
            super().__setitem__(key, value)

    out = np.zeros((7, model.n_outputs), np.float32).view(Out)
    got = berg.encode(model, images, batch_size=2, out=out, readout_mb=readout_mb)
    assert got is out and written == [3, 3, 1]
    assert calls.rows == [3, 3, 1]  # gathered across backbone batches of 2
    assert max(calls.feature_bytes) <= readout_mb * 2**20 and len(calls.pointers) == 1
    assert np.abs(np.asarray(got) - unbatched).max() / np.abs(unbatched).max() <= 1e-6
    default = berg.encode(model, images, batch_size=2)  # 256 MiB: all seven in one readout batch
    assert calls.rows[-1] == 7
    assert np.abs(default - unbatched).max() / np.abs(unbatched).max() <= 1e-6


def test_movie_pairs_readout_batches_with_their_samples(tiny_model, berg_dir, tmp_path):
    from _support import ramp_video

    from berg.movie import predict_movie
    from berg.video import iter_frames

    model = berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir)
    video = ramp_video(tmp_path / "ramp.mp4", n_frames=14, fps=2.0, size=(32, 32))
    calls = _Calls(model.readout)
    result = predict_movie(model, video, tr=1.0, sample_rate_hz=2.0, batch_size=2, show_progress=False)
    frames = np.stack([f for _, f in iter_frames(video, rate_hz=2.0)])
    assert calls.rows == [14]  # seven decoded batches of two, one readout batch
    want = np.concatenate([model.predict(frames[i:i + 1]) for i in range(len(frames))])
    assert np.abs(result.samples - want).max() / np.abs(want).max() <= 1e-6
    np.testing.assert_allclose(result.sample_times, np.arange(14) / 2.0)
    levels = frames.reshape(14, -1).mean(axis=1) / 255  # the luminance of a grey frame is its level
    np.testing.assert_allclose(result.baselines["luminance"], levels, atol=1e-6)


def test_answered_splits_batches_across_readout_blocks():
    from berg.movie import _answered

    batches = iter([(np.array([0.0, 1.0]), "b0", {"x": np.array([10.0, 11.0])}),
                    (np.array([2.0, 3.0]), "b1", {"x": np.array([12.0, 13.0])}),
                    (np.array([4.0]), "b2", {"x": np.array([14.0])})])

    def by_threes(staged):  # answers every three samples, whatever the batches: row value = sample index
        seen = [i for batch in staged for i in range({"b0": 2, "b1": 2, "b2": 1}[batch])]
        for start in range(0, len(seen), 3):
            yield np.arange(start, min(start + 3, len(seen)), dtype=np.float32)[:, None]

    out = list(_answered(batches, by_threes))
    assert [len(t) for t, _, _ in out] == [3, 2]
    for times, responses, low_level in out:
        np.testing.assert_array_equal(times, responses[:, 0])
        np.testing.assert_array_equal(low_level["x"], 10 + times)
