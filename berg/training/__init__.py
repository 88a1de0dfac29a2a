"""Train, evaluate and package new encoders (the library behind ``creation_code/`` and ``berg train``).

Modules: :mod:`.dataset` (dataset specs), :mod:`.synthetic` (data of known accuracy), :mod:`.ridge`
(scaler + PCA, per-voxel ridge CV), :mod:`.metrics` (noise ceilings, test metrics), :mod:`.features`
(cached backbone features), :mod:`.package` (native files + card), :mod:`.report`, :mod:`.train`.
"""

from ..errors import DatasetError, TrainingError
from .dataset import load_dataset
from .metrics import noise_ceiling, accuracy_metrics
from .ridge import fit_projection, fit_ridge_cv
from .synthetic import SyntheticData, make_synthetic, write_dataset
from .train import TrainResult, train

__all__ = ["DatasetError", "SyntheticData", "TrainResult", "TrainingError", "fit_projection", "fit_ridge_cv",
           "load_dataset", "make_synthetic", "noise_ceiling", "accuracy_metrics", "train", "write_dataset"]
