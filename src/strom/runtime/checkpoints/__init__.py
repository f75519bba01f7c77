"""Checkpoints of a streaming run (one process, or each worker of a multi-worker run): written,
listed, recovered.

- :mod:`.store`: the checkpoint directory (atomic writes, manifests, verification, retention);
- :mod:`.fingerprint`: what a checkpoint must match to be restored into a run;
- :mod:`.recovery`: which checkpoint a starting run restores, and how;
- :mod:`.coordinator`: the checkpoint protocol between rounds, and the run that drives it;
- :mod:`.layout`: a multi-worker run's directory (its run file, one store per worker).

Used through ``run_streaming(pipeline, checkpoint_dir=...)`` and ``strom run --checkpoint-dir``.
"""

from strom.runtime.checkpoints.coordinator import CheckpointedRun, CheckpointStats
from strom.runtime.checkpoints.recovery import Recovered, check_sinks, recover
from strom.runtime.checkpoints.store import CheckpointError, CheckpointStore, Manifest, StateFile

__all__ = [
    "CheckpointError",
    "CheckpointStats",
    "CheckpointStore",
    "CheckpointedRun",
    "Manifest",
    "Recovered",
    "StateFile",
    "check_sinks",
    "recover",
]
