"""Ray start-up for every command that runs trials (``medtune tune``, ``medtune pretrain --search``):
join the cluster ``$RAY_ADDRESS`` names, else start Ray on this machine, and check that some node can
hold one trial before any trial is queued.

A Ray started here gets ``OMP_WAIT_POLICY=PASSIVE`` (unless the variable is set): a trial with N CPUs
runs N OpenMP threads, and by default an idle one spins before it sleeps. When anything else shares the
cores (the driver, Ray's daemons, another program), the spinning threads take the cores the working
ones need: a 2-thread Lite0 epoch beside a busy neighbour took 103 s instead of 13 s here. On idle cores
the passive policy costs next to nothing (``benchmarks/omp_wait.py``). Cluster nodes set it in their own
environment (``docker/compose.yaml``)."""

from __future__ import annotations

import os
import socket

from tuner.errors import ConfigError
from tuner.terminal import VERBOSE, level, reroute_library_logs

OMP_WAIT_VARIABLE = "OMP_WAIT_POLICY"  # PASSIVE for a local Ray's workers unless set: see the module's docstring


def init_ray(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Join the cluster named by $RAY_ADDRESS, else start Ray on this machine (an already started Ray
    is used as it is); then check that some node can hold a trial asking for these resources, since
    Tune would otherwise wait for one forever."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            check_ray_address(address)
        else:  # the local Ray's daemons, and the trial workers they start, inherit this process's environment
            os.environ.setdefault(OMP_WAIT_VARIABLE, "PASSIVE")
        try:
            # Below --verbose, the trials' own output (checkpoint notices) stays in Ray's worker logs.
            ray.init(address=address or None, include_dashboard=False, log_to_driver=level() == VERBOSE,
                     configure_logging=False)
            reroute_library_logs()  # ray.init installs Ray's terminal handler again
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot connect to the Ray cluster at RAY_ADDRESS={address!r} ({error}). "
                              "Start it, fix RAY_ADDRESS, or unset it to run locally.") from error
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus_per_trial and n.get("GPU", 0) >= gpus_per_trial for n in nodes):
        biggest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
        raise ConfigError(f"no node can run a trial asking for {cpus_per_trial} CPU and {gpus_per_trial} GPU; "
                          f"the largest node has {biggest[0]:g} CPU and {biggest[1]:g} GPU. Lower --cpus-per-trial "
                          "/ --gpus-per-trial.")


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A cluster address that does not answer fails in seconds; ray.init would retry for minutes."""
    if address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as error:
        raise ConfigError(f"RAY_ADDRESS={address!r} does not answer ({error}). Start the cluster, fix RAY_ADDRESS "
                          "(host:port of the head's GCS, e.g. 10.0.0.5:6379), or unset it to run locally.") from error
