"""berg: a zoo of DNN brain-encoding models — images and videos in, in-silico fMRI responses out.

>>> from berg import BERG
>>> berg = BERG()
>>> model = berg.get_encoding_model("fmri-bold5000-resnet18", subject=1, selection={"roi": "PPA"})
>>> responses = berg.encode(model, images)          # (n_images, n_voxels) float32
"""

from .api import (BERG, default_berg_dir, describe, get_encoding_model, get_model_catalog, get_model_metadata,
                  list_models)
from .encoder import EncodingModel, berg_version, encode
from .errors import BergError
from .fetch import download
from .movie import MovieResult, predict_movie
from .spaces import to_nifti

__version__ = berg_version()

__all__ = ["BERG", "BergError", "EncodingModel", "MovieResult", "default_berg_dir", "describe", "download", "encode",
           "get_encoding_model", "get_model_catalog", "get_model_metadata", "list_models", "predict_movie", "to_nifti",
           "__version__"]
