"""berg: a zoo of DNN brain-encoding models — images and videos in, in-silico fMRI responses out.

>>> from berg import BERG
>>> berg = BERG()
>>> berg.list_models()                              # the zoo's model ids
>>> model = berg.get_encoding_model(model_id, subject=1, selection={"roi": roi_name})
>>> responses = berg.encode(model, images)          # as the model's space gives them (volumes: (n, n_voxels))

``import berg`` is light: torch and the other heavy libraries load with the first function that needs them.
"""

from importlib import import_module

from .config import berg_version, default_berg_dir
from .errors import BergError

__version__ = berg_version()

_PUBLIC = {
    "BERG": "api", "describe": "api", "get_encoding_model": "api", "get_model_catalog": "api",
    "get_model_metadata": "api", "list_models": "api", "EncodingModel": "encoder", "encode": "encoder",
    "download": "fetch", "ModelMetadata": "metadata", "MovieResult": "movie", "predict_movie": "movie", "to_nifti": "spaces",
    "to_mne": "spaces", "plot_responses": "analysis",
}

__all__ = sorted([*_PUBLIC, "BergError", "default_berg_dir", "__version__"])


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'berg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
