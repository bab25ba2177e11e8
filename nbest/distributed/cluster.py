"""Connecting to Ray: the ``--ray`` address and options, and the cluster a run uses.

Ray is imported by :func:`import_ray` when a run starts, never at import time,
so nbest works without it (``--ray`` then says how to install it).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nbest.errors import ConfigError

__all__ = ["RAY_MISSING", "RayOptions", "check_address", "import_ray", "ray_cluster"]

RAY_MISSING = "--ray needs Ray: pip install 'nbest[ray]'"
_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9._-]+:[0-9]{1,5}")


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ConfigError: Ray is not installed (``pip install 'nbest[ray]'``).
    """
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError(RAY_MISSING, parameter="ray") from None


def check_address(address: str | None) -> str | None:
    """``--ray``'s address: None or empty (start a local cluster), ``auto``
    (join the cluster running on this machine or named by ``RAY_ADDRESS``),
    ``HOST:PORT`` (a head node's GCS) or ``ray://HOST:PORT`` (Ray Client).

    >>> check_address(""), check_address("auto"), check_address("10.0.0.1:6379")
    (None, 'auto', '10.0.0.1:6379')
    >>> check_address("http://head")
    Traceback (most recent call last):
    ...
    nbest.errors.ConfigError: --ray: 'http://head' is not a cluster address; give auto, HOST:PORT or ray://HOST:PORT ...

    Raises:
        ConfigError: anything else.
    """
    if address is None or not address.strip():
        return None
    text = address.strip()
    if text == "auto":
        return text
    port = text.rpartition(":")[2]
    if _ADDRESS.fullmatch(text) is None or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--ray: {address!r} is not a cluster address; give auto, HOST:PORT or ray://HOST:PORT "
            "(no value: start a local cluster)",
            parameter="ray",
            value=address,
        )
    return text


@dataclass(frozen=True)
class RayOptions:
    """Where replicas run and how many (the ``--ray`` options)."""

    address: str | None = None
    """Cluster to join (see :func:`check_address`); None: start a local one."""
    replicas: int = 1
    """Replicas (actors) to run, each with its own orchestrator and engine."""
    replica_cpus: float = 1.0
    """CPUs Ray reserves for each replica."""
    replica_gpus: float = 0.0
    """GPUs Ray reserves for each replica (give the model's tensor-parallel size on GPUs)."""
    max_restarts: int = 3
    """Replicas started again after one died, over the whole run."""
    in_flight: int | None = None
    """Requests sent ahead to each replica; None: twice the spec's ``concurrency``."""
    start_timeout: float = 1800.0
    """Seconds a replica may take to start (schedule, load its model)."""
    verbose: bool = False
    """Show Ray's logs and the replicas' output."""

    def check(self) -> None:
        """Reject bad values, naming the option.

        Raises:
            ConfigError: a count below its minimum, a negative resource, a bad address.
        """
        check_address(self.address)
        for name, value, least in (("--replicas", self.replicas, 1), ("--max-restarts", self.max_restarts, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name}: must be a whole number >= {least} (got {value!r})", parameter=name, value=value)
        if self.in_flight is not None and (not isinstance(self.in_flight, int) or self.in_flight < 1):
            raise ConfigError(f"in_flight: must be a whole number >= 1 (got {self.in_flight!r})", parameter="in_flight")
        for name, amount in (("--replica-cpus", self.replica_cpus), ("--replica-gpus", self.replica_gpus)):
            if not isinstance(amount, (int, float)) or not 0 <= amount < float("inf"):
                raise ConfigError(f"{name}: must be a number >= 0 (got {amount!r})", parameter=name, value=amount)
        if not self.start_timeout > 0:
            raise ConfigError("start_timeout: must be a positive number of seconds", parameter="start_timeout")


@contextlib.contextmanager
def ray_cluster(address: str | None, *, verbose: bool = False) -> Iterator[None]:
    """Connect to Ray for the block: start a local cluster (``address`` None)
    or join one (see :func:`check_address`); disconnect on the way out, which
    stops a cluster started here. When this process is already connected
    (``ray.init`` called by the caller) that connection is used and left open.

    Raises:
        ConfigError: Ray is missing, a bad address, or no cluster answers there.
    """
    address = check_address(address)
    ray = import_ray()
    if address is not None and address != "auto":
        _probe(address)
    if ray.is_initialized():
        yield
        return
    level = logging.INFO if verbose else logging.ERROR
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose, logging_level=level)
    except (ConnectionError, TimeoutError) as exc:
        where = "on this machine" if address == "auto" else f"at {address}"
        said = str(exc).strip().splitlines()
        raise ConfigError(
            f"--ray: no Ray cluster {where} ({said[0] if said else type(exc).__name__}); "
            "start one with `ray start --head`, or give --ray alone for a local one",
            parameter="ray",
            value=address,
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at ``address`` (Ray itself retries for minutes).

    Raises:
        ConfigError: the host does not resolve, or refuses or ignores the connection.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"--ray: no Ray cluster at {address} ({exc.strerror or type(exc).__name__}); "
            "start one with `ray start --head`, or give --ray alone for a local one",
            parameter="ray",
            value=address,
        ) from None
