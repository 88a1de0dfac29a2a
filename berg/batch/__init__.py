"""Batch prediction: many films and image sets x models x subjects, resumable, locally or on a Ray cluster.

>>> import berg.batch
>>> result = berg.batch.run("job.yaml")                    # local engine
>>> result = berg.batch.run("job.yaml", engine="ray")      # Ray Data (pip install "berg[ray]")
"""

from .job import Job, load_job
from .runner import BatchResult, run
from .units import Unit, plan

__all__ = ["BatchResult", "Job", "Unit", "load_job", "plan", "run"]
