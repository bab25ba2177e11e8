"""nbest past one machine, on Ray: replicas that each own an orchestrator.

- :class:`ReplicaSpec` and :func:`build_orchestrator`: what a replica is
  built from (plain data) and the one way to build it;
- :class:`ReplicaPool`: replicas as Ray actors, fed from one driver with
  :meth:`ReplicaPool.as_completed` (what ``nbest batch --ray`` and
  ``nbest eval --ray`` run on);
- :class:`NBestStage`: a Ray Data stage (``ds.map_batches(NBestStage, ...)``).

Ray is imported only when a pool starts (``pip install 'nbest[ray]'``), so
this package imports without it.
"""

from __future__ import annotations

from nbest.distributed.cluster import RayOptions, check_address, ray_cluster
from nbest.distributed.ray_batch import Replica, ReplicaPool
from nbest.distributed.replica import ReplicaSpec, build_orchestrator, engine_configs, load_factory
from nbest.distributed.stage import NBestStage

__all__ = [
    "NBestStage",
    "RayOptions",
    "Replica",
    "ReplicaPool",
    "ReplicaSpec",
    "build_orchestrator",
    "check_address",
    "engine_configs",
    "load_factory",
    "ray_cluster",
]
