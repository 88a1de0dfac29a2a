"""Execution options (bf16 autocast, channels-last) give float32 outputs within stated tolerances."""

import numpy as np
import pytest

import berg

# bf16 keeps 8 bits of mantissa: relative error of responses after a 512-d readout stays under 5 %
BF16_RELATIVE_ERROR = 0.05


@pytest.fixture(scope="module")
def reference(shared_model, images):
    return berg.encode(shared_model, images[:2])


def _relative_error(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


def test_channels_last_equals_float32(reference, shared_tiny_model, images):
    model = berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None,
                                    berg_dir=shared_tiny_model["berg_dir"], channels_last=True)
    assert _relative_error(berg.encode(model, images[:2]), reference) <= 1e-5


def test_bfloat16_autocast_within_tolerance(reference, shared_tiny_model, images):
    model = berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None,
                                    berg_dir=shared_tiny_model["berg_dir"], precision="bfloat16")
    got = berg.encode(model, images[:2])
    assert got.dtype == np.float32 and model.metadata["backbone"]["precision"] == "bfloat16"
    error = _relative_error(got, reference)
    assert 0 < error <= BF16_RELATIVE_ERROR  # > 0: the option really changed the arithmetic


def test_unknown_precision(tiny_model, berg_dir):
    with pytest.raises(berg.BergError, match=r"precision='float8' is not valid: expected one of 'float32', 'bfloat16', 'float16'"):
        berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None, berg_dir=berg_dir,
                                precision="float8")
