"""Optuna sweeps: search lambda and hidden per method, then re-run the best on new splits.

Layers, each importing only the ones above it in this list (and the core: config, data,
methods, records, tracking, train):

- :mod:`.plan`: what a sweep searches (``sweeps/*.yaml``), strictly checked; the resolved job.
- :mod:`.studies`: the Optuna storage, the search and final studies, and how workers share them.
- :mod:`.worker`: runs trials until none is left; each trial is one training run and one record.
- :mod:`.restore`: rebuilds studies a storage lost from the run records.
- :mod:`.launcher`: the workers as submitit jobs (``--launcher slurm`` or ``local``).
- :mod:`.command`: ``mtlbench sweep``: resolve the job, prepare, spawn or submit and watch the workers, report.
"""
