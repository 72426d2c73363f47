"""Measuring on a Ray cluster (``--ray``): each measured point is one Ray task, and the driver alone writes.

What runs where:

* the driver (this process) plans the points, counts them (closed forms and the meta-device counter take
  milliseconds), opens the results file (its lock, the resume keys), submits one task per point and appends
  each row the moment its task returns, in the order they finish;
* a worker measures the point with the same code a local run uses (:func:`attnbench.bench.measure_target`)
  and sends the row back with its own device fingerprint and where it ran (:func:`where_it_ran`).

A task asks for ``num_gpus=1`` on CUDA, or ``num_cpus=N`` on CPU with N the torch threads it sets, so two
points never share a GPU or a core. ``accelerator_type`` sends points to one GPU model. A worker that dies
is Ray's to retry (``max_retries``, never a loop of ours); a point whose retries are spent becomes an error
row. A row's key names the device it was measured on, taken from a probe task run where the points will
run, so a cluster of one GPU model writes the keys a local run on that GPU writes and ``--resume`` works
across the two.

Ray is an optional extra (``pip install 'attnbench[ray]'``): this module imports it only when asked.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.errors import UsageError
from attnbench.store.rows import WORKER_DIED

LOCAL = "local"  # --ray with no address: start a Ray instance on this machine for the run
INSTALL_HINT = "pip install 'attnbench[ray]'"
PROBE_TIMEOUT_S = 300.0
# TEST ONLY: "SUBSTRING" kills the worker of every task whose key contains SUBSTRING (each retry too);
# "SUBSTRING;once=PATH" kills it once (the first attempt creates PATH). Read on the driver, passed to the tasks.
DIE_IN_TASK_ENV = "ATTNBENCH_TEST_DIE_IN_TASK"


@dataclass(frozen=True)
class Cluster:
    """Where measuring runs: ``address`` ``local`` (start Ray here), ``auto`` (join the running cluster) or
    a cluster address; ``accelerator`` one GPU model (a Ray accelerator type such as ``H100``);
    ``each_accelerator`` every GPU model the cluster has, the same points on each."""

    address: str = LOCAL
    accelerator: str | None = None
    each_accelerator: bool = False
    max_retries: int = 2
    local_cpus: int | None = None  # size of a Ray started here (None: every core)

    def __post_init__(self) -> None:
        if not self.address.strip():
            raise UsageError("--ray takes no value (start Ray here), 'auto' (join the running cluster) or an address")
        if self.accelerator is not None and self.each_accelerator:
            raise UsageError("--accelerator picks one GPU model and --each-accelerator runs on every one: give one")
        if self.max_retries < 0:
            raise UsageError(f"max_retries must be >= 0, got {self.max_retries}")


def cluster_option(address: str | None, accelerator: str | None, each_accelerator: bool) -> Cluster | None:
    """The CLI's ``--ray``, ``--accelerator`` and ``--each-accelerator`` as a :class:`Cluster` (None: run
    here, without Ray)."""
    if address is None:
        if accelerator is not None or each_accelerator:
            raise UsageError("--accelerator and --each-accelerator place points on a Ray cluster: add --ray")
        return None
    return Cluster(address=address, accelerator=accelerator, each_accelerator=each_accelerator)


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


_COMMAND: dict[str, bool] = {"open": False, "started": False}  # a command's Ray session (see :func:`command_session`)


@contextmanager
def command_session() -> Iterator[None]:
    """For one command: a Ray that :func:`connect` starts or joins inside stays connected until the command
    ends (its device, its run and its tables share it), and is closed then. Nothing connects until a step
    needs the cluster, so bad options are refused before Ray starts."""
    _COMMAND.update(open=True, started=False)
    try:
        yield
    finally:
        started = _COMMAND["started"]
        _COMMAND.update(open=False, started=False)
        if started:
            ray_module().shutdown()


@contextmanager
def connect(cluster: Cluster) -> Iterator[Any]:
    """Ray, connected: joins ``cluster.address`` (or starts a local Ray) unless this process is connected
    already; a connection made here is closed on the way out (at the end of the command, inside
    :func:`command_session`)."""
    ray = ray_module()
    if ray.is_initialized():
        yield ray
        return
    # ERROR: Ray's start-up notes (token authentication, "Started a local Ray instance") would be lines
    # around the command's own output
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if cluster.address != LOCAL:
        reachable(cluster.address)  # Ray itself waits for an absent cluster without end
    try:
        if cluster.address == LOCAL:
            ray.init(num_cpus=cluster.local_cpus, **kwargs)
        else:
            ray.init(address=cluster.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = "start Ray on this machine" if cluster.address == LOCAL else f"join the Ray cluster at '{cluster.address}'"
        first = " ".join(str(err).split())[:300] or type(err).__name__
        raise UsageError(f"cannot {where}: {first}") from None
    if _COMMAND["open"]:
        _COMMAND["started"] = True
        yield ray
        return
    try:
        yield ray
    finally:
        ray.shutdown()


def resolve_device(cluster: Cluster, device: str) -> str:
    """The device of a run on the cluster, checked before anything starts: ``cpu`` or ``cuda`` as given
    (no ``cuda:N``: Ray hands out the GPU); ``auto`` asks the cluster (CUDA when it has GPUs). Placement on a
    GPU model needs CUDA."""
    device = device.strip().lower()
    if device == "auto":
        with connect(cluster) as ray:
            device = "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"
    check_device(device)
    if (cluster.accelerator or cluster.each_accelerator) and device != "cuda":
        raise UsageError("--accelerator and --each-accelerator choose a GPU model: they need --device cuda")
    return device


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse (one line) a cluster address nothing answers at: ``host:port``, or the cluster ``auto`` finds."""
    import socket

    target = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001 - a private helper; without it Ray's own error stands
            return
        if not target:
            return  # Ray says at once that no cluster runs
    if "://" in target:
        return  # a Ray client address: Ray reports it
    host, _, port = target.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        raise UsageError(f"--ray takes no value, 'auto' or a cluster address HOST:PORT, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UsageError(f"cannot join the Ray cluster at '{target}': nothing answers there ({err.strerror or err}); "
                         "start one with `ray start --head`") from None


# ---------------------------------------------------------------------------------------------------------
# Where points run


@dataclass(frozen=True)
class Group:
    """The workers one set of points runs on: ``accelerator`` (a GPU model, or None: any worker with the
    resources) and the fingerprint a probe task took there, which names the device in the rows' keys."""

    accelerator: str | None
    fingerprint: dict[str, Any]

    @property
    def label(self) -> str:
        fp = self.fingerprint
        return self.accelerator or fp.get("gpu_name") or fp.get("cpu_model") or "unknown"


def task_options(device: str, threads: int | None, accelerator: str | None, max_retries: int) -> dict[str, Any]:
    """Ray resources of one measured point: a whole GPU on CUDA (and one core to drive it), ``threads``
    cores on CPU; ``accelerator_type`` pins a GPU model."""
    # SPREAD: points go to every node that has room, not first to the driver's (whose queue would then hold
    # most of a sweep while other nodes start their workers)
    opts: dict[str, Any] = {"max_retries": max_retries, "retry_exceptions": False, "scheduling_strategy": "SPREAD"}
    if device.startswith("cuda"):
        opts.update(num_gpus=1, num_cpus=threads or 1)
    else:
        opts.update(num_cpus=threads or 1, num_gpus=0)
    if accelerator:
        opts["accelerator_type"] = accelerator
    return opts


def accelerator_types(ray: Any) -> list[str]:
    """The GPU models (Ray accelerator types) of the cluster's live nodes."""
    return sorted({k.split(":", 1)[1] for k in ray.cluster_resources() if k.startswith("accelerator_type:")})


def check_device(device: str) -> str:
    """On Ray a task is given a GPU by Ray (it sees it as ``cuda``): ``cuda:N`` is refused."""
    if device.startswith("cuda:"):
        raise UsageError(f"with --ray each point gets one GPU from Ray: use --device cuda, not {device}")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device '{device}'; with --ray: cpu, cuda or auto")
    return device


def groups(ray: Any, cluster: Cluster, device: str, threads: int | None) -> list[Group]:
    """Where the points run, each place probed for its device fingerprint. Refuses (one line) what the
    cluster cannot run: CUDA without GPUs, more threads than a node has cores, an unknown GPU model."""
    check_device(device)
    cuda = device.startswith("cuda")
    resources = ray.cluster_resources()
    if (cluster.accelerator or cluster.each_accelerator) and not cuda:
        raise UsageError("--accelerator and --each-accelerator choose a GPU model: they need --device cuda")
    if cuda and resources.get("GPU", 0) < 1:
        raise UsageError("the Ray cluster has no GPU: start its GPU workers with `ray start --num-gpus N`")
    if not cuda:
        cores = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if (threads or 1) > cores:
            raise UsageError(f"--threads {threads} asks for more cores than any node of the Ray cluster has ({cores:g})")
    types = accelerator_types(ray)
    if cluster.each_accelerator:
        if not types:
            raise UsageError("--each-accelerator: the Ray cluster's GPUs carry no accelerator type")
        chosen: list[str | None] = list(types)
    elif cluster.accelerator:
        if cluster.accelerator not in types:
            have = ", ".join(types) or "none"
            raise UsageError(f"--accelerator {cluster.accelerator}: the Ray cluster has no such GPUs (its GPU models: {have})")
        chosen = [cluster.accelerator]
    else:
        chosen = [None]
    return [Group(a, _probe_nodes(ray, cluster, device, threads, a)) for a in chosen]


def _probe_nodes(ray: Any, cluster: Cluster, device: str, threads: int | None, accelerator: str | None) -> dict[str, Any]:
    """Probe every live node that can run a point of this group, all at once (which also starts a worker on
    each, importing torch there before the first point arrives); the first node's fingerprint names the
    group's device. Nodes unlike it are named in a warning: their rows will carry keys of their own."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from attnbench.store.identity import identity_differences

    need = {"CPU": threads or 1, **({"GPU": 1} if device.startswith("cuda") else {}),
            **({f"accelerator_type:{accelerator}": 1e-9} if accelerator else {})}
    nodes = [n for n in ray.nodes() if n.get("Alive") and all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items())]
    opts = task_options(device, threads, accelerator, cluster.max_retries)
    probe = ray.remote(_probe)
    refs = [probe.options(**{**opts, "scheduling_strategy": NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)})
            .remote(device, threads) for n in nodes if n.get("NodeID")]
    if not refs:  # nodes without ids (an older Ray): one probe wherever Ray places it
        refs = [probe.options(**opts).remote(device, threads)]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    if len(ready) < len(refs):
        for ref in refs:
            ray.cancel(ref, force=True)
        raise UsageError(f"no Ray worker took a probe task in {PROBE_TIMEOUT_S:g} s: the cluster cannot place a point "
                         f"({need})")
    fps = ray.get(refs)
    unlike = [d for fp in fps[1:] if (d := identity_differences(fps[0], fp))]
    if unlike:  # their rows could not share keys, nor be resumed on one another
        raise UsageError(f"the Ray nodes that would run these points are not one device ({'; '.join(unlike[0])}): "
                         "pick one GPU model with --accelerator, or run on nodes that are alike")
    return fps[0]


def _probe(device: str, threads: int | None) -> dict[str, Any]:
    from attnbench.measuring import device as dev

    with dev.torch_threads(threads):
        return dev.fingerprint(device)


def where_it_ran() -> dict[str, Any]:
    """The worker's place in the cluster: node id and address, process id, its GPUs (Ray's ids)."""
    import ray

    ctx = ray.get_runtime_context()
    return {"ray_node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
            "accelerator_ids": {k: list(v) for k, v in ctx.get_accelerator_ids().items() if v}}


# ---------------------------------------------------------------------------------------------------------
# Running points


@dataclass
class Job:
    """One measured point: ``work(*args)`` runs on a worker and returns the row; ``group`` says where."""

    key: str
    work: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    group: Group


@dataclass
class Failed:
    """A point whose task could not finish (its worker died more than ``max_retries`` times, or Ray failed)."""

    status: str


def _die_if_told(hook: str | None, key: str) -> None:
    """TEST ONLY (see :data:`DIE_IN_TASK_ENV`): end this worker process the way a crash would."""
    if not hook:
        return
    what, _, marker = hook.partition(";once=")
    if what not in key:
        return
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os._exit(1)


def _run_job(work: Callable[..., Any], args: tuple[Any, ...], key: str, hook: str | None) -> Any:
    _die_if_told(hook, key)
    got = work(*args)
    if isinstance(got, dict):  # a row: it says where it ran
        got["worker"] = where_it_ran()
    return got


def _ship_user_code() -> None:
    """Blocks from users' files live in modules no worker can import: send their code by value."""
    from ray import cloudpickle

    for name, module in list(sys.modules.items()):
        if name.startswith("attnbench_user_") and module is not None:
            cloudpickle.register_pickle_by_value(module)


def stream(ray: Any, jobs: Sequence[Job], device: str, threads: int | None, cluster: Cluster) -> Iterator[tuple[Job, dict[str, Any] | Failed]]:
    """Submit every job at once (Ray runs as many as the cluster has GPUs or cores for) and yield each
    (job, row) as it finishes; a job that failed for good yields a :class:`Failed`. Leaving early (Ctrl-C)
    cancels what has not finished."""
    _ship_user_code()
    run = ray.remote(_run_job)
    hook = os.environ.get(DIE_IN_TASK_ENV) or None
    pending = {run.options(**task_options(device, threads, j.group.accelerator, cluster.max_retries))
               .remote(j.work, j.args, j.key, hook): j for j in jobs}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    yield job, ray.get(ref)
                except ray.exceptions.RayError as err:
                    yield job, Failed(failure_status(err, cluster.max_retries))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


DIED = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError")  # Ray's: the process ended


def failure_status(err: BaseException, retries: int) -> str:
    """An error row's status for a task Ray gave up on."""
    import re

    from attnbench.text import clean

    lines = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if ln.strip()]
    first = clean(lines[-1].strip() if lines else "")[:200]  # a task's error: its last line says what was raised
    name = type(err).__name__
    if name in DIED:
        return f"{WORKER_DIED} ({retries} retries spent): {name}"
    return f"error: Ray: {name}: {first}"


def unlike_probe(group: Group, planned: str, row: dict[str, Any]) -> str | None:
    """When the worker that measured ``row`` is not the device probed for its group (a node that joined
    later): the row is moved to a key of its own (``planned`` + ``:unlike-probe=<digest of its device>``),
    so it neither stands for the planned point nor blocks its resume, and the warning is returned; else None."""
    import hashlib
    import json

    from attnbench.store.identity import CPU_IDENTITY, CUDA_IDENTITY, identity_differences

    fp = row.get("fingerprint") or {}
    diff = identity_differences(group.fingerprint, fp)
    if not diff:
        return None
    device = {k: fp.get(k) for k in sorted({*CPU_IDENTITY, *CUDA_IDENTITY})}
    row["key"] = f"{planned}:unlike-probe={hashlib.sha1(json.dumps(device, default=str).encode()).hexdigest()[:8]}"
    return (f"{planned} ran on a worker unlike the probed one ({'; '.join(diff)}): its row is kept under the key "
            f"{row['key']}, and the point is still missing (--resume runs it again)")


def by_accelerator_path(path: str, label: str) -> str:
    """``base.json`` -> ``base.<label>.json``: one file per GPU model (snapshot with --each-accelerator)."""
    from attnbench.measuring.device import slugify

    p = Path(path)
    return str(p.with_name(f"{p.stem}.{slugify(label)}{p.suffix}"))
