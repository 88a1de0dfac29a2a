"""``import berg`` is light: torch loads with the first model, not with the package or its catalogue."""

from __future__ import annotations

import subprocess
import sys

import berg


def test_catalogue_calls_do_not_import_torch():
    code = ("import sys, berg; b = berg.BERG(); b.list_models(); berg.describe('fmri-bmd-s3d'); "
            "berg.get_model_catalog(); assert 'torch' not in sys.modules, 'torch imported'; "
            "berg.encode; assert 'torch' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_public_name_resolves():
    for name in berg.__all__:
        assert getattr(berg, name) is not None, name
    for name in ("BERG", "list_models", "get_encoding_model", "encode", "get_model_metadata", "to_nifti"):
        assert name in berg.__all__ and callable(getattr(berg, name)) and getattr(berg, name).__doc__, name
