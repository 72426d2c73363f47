"""Measuring on Ray (attnbench.distributed): the driver's logic on a stand-in Ray that runs tasks inline, then
a real local Ray (``ray.init(num_cpus=2)``, started once for the module): a 12-point CPU sweep gives the serial
run's keys and FLOPs, a worker killed mid-task still ends with every row exactly once, a point whose worker
always dies is an error row, and a driver killed with SIGKILL is finished by --resume with every row once."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from attnbench import distributed as ds
from attnbench import sweep as sw
from attnbench.cli import app, optional_values
from attnbench.errors import UsageError
from attnbench.errors import AttnBenchWarning, UsageError
from attnbench.report import tables
from tests.killing import rows_of, sigkill_after

# 12 cheap points: 3 blocks x T in {2, 4} and H = W in {4, 8}; 2 timed calls of at least 10 ms each
MODULES = ["se", "eca", "cs"]
VALUES = {"T": [2, 4], "HW": [4, 8]}
TIMING = {"device": "cpu", "min_reps": 2, "target_s": 0.01}


def _points() -> list[sw.Point]:
    return sw.plan(MODULES, VALUES, preset=None)


# -- the CLI's options -------------------------------------------------------------------------------


def test_bare_ray_starts_a_local_one_and_a_value_is_kept() -> None:
    assert optional_values(["sweep", "--ray"]) == ["sweep", "--ray", "local"]
    assert optional_values(["sweep", "--ray", "--device", "cpu"]) == ["sweep", "--ray", "local", "--device", "cpu"]
    assert optional_values(["sweep", "--ray", "auto", "--T", "4"]) == ["sweep", "--ray", "auto", "--T", "4"]
    assert optional_values(["sweep", "--", "--ray"]) == ["sweep", "--", "--ray"]
    # an option that takes a value followed by an option's name: one line, exit 2 (was a file named --ray)
    with pytest.raises(UsageError, match="--out needs a value, but the next word is the option --ray"):
        optional_values(["sweep", "--out", "--ray"], {"--out"}, {"--out", "--ray"})
    assert optional_values(["sweep", "--json", "--ray"], {"--out"}, {"--out", "--ray", "--json"}) == ["sweep", "--json", "--ray", "local"]
    assert optional_values(["sweep", "--out", "./--ray"], {"--out"}, {"--out", "--ray"}) == ["sweep", "--out", "./--ray"]
    from attnbench.cli import _options

    takes_value, every = _options()
    assert {"--out", "--ray", "--T", "--baseline"} <= takes_value and "--json" not in takes_value and "--json" in every


def test_placement_options_need_ray_and_exclude_each_other() -> None:
    assert ds.cluster_option(None, None, False) is None
    with pytest.raises(UsageError, match="add --ray"):
        ds.cluster_option(None, "H100", False)
    with pytest.raises(UsageError, match="give one"):
        ds.cluster_option("auto", "H100", True)
    assert ds.cluster_option("auto", "H100", False) == ds.Cluster("auto", "H100")


def test_a_point_holds_a_whole_gpu_or_as_many_cores_as_threads() -> None:
    cuda = ds.task_options("cuda", None, "H100", 2)
    assert (cuda["num_gpus"], cuda["num_cpus"], cuda["accelerator_type"], cuda["max_retries"]) == (1, 1, "H100", 2)
    cpu = ds.task_options("cpu", 3, None, 0)
    assert (cpu["num_cpus"], cpu["num_gpus"], cpu["retry_exceptions"]) == (3, 0, False) and "accelerator_type" not in cpu
    with pytest.raises(UsageError, match="--device cuda, not cuda:1"):
        ds.check_device("cuda:1")


def test_ray_options_are_refused_clearly_without_a_device_or_for_max_fit(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "--ray", "local", "-m", "cs", "--T", "4", "--no-save"])
    assert r.exit_code == 2 and "add --device" in r.output
    r = runner.invoke(app, ["speed", "--accelerator", "H100", "-m", "cs"])
    assert r.exit_code == 2 and "add --ray" in r.output
    # bad options are refused before Ray starts (at once, and with one line)
    for args in (["sweep", "-m", "cs", "--T", "0", "--device", "cpu", "--ray", "local"],
                 ["speed", "-m", "cs", "--device", "cpu", "--threads", "0", "--ray", "local"],
                 ["snapshot", "--out", str(tmp_path / "b.json"), "-m", "cs", "--device", "cpu", "--ray", "local",
                  "--each-accelerator"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert not ray_module_initialized()
    # an address nothing answers at: one line at once (Ray itself would wait without end)
    for address, said in (("127.0.0.1:1", "nothing answers there"), ("nonsense", "HOST:PORT")):
        with pytest.raises(UsageError, match=said):
            ds.reachable(address, timeout_s=2)


def ray_module_initialized() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def test_failure_status_names_a_dead_worker_in_one_line() -> None:
    class WorkerCrashedError(Exception):
        pass

    assert ds.failure_status(WorkerCrashedError("The worker died unexpectedly"), 2) == (
        "error: the worker died (2 retries spent): WorkerCrashedError")
    text = ds.failure_status(RuntimeError("\x1b[36mray::_run_job()\x1b[39m (pid=1)\n  File x\nValueError: died"), 1)
    assert text == "error: Ray: RuntimeError: ValueError: died"


def test_one_file_per_gpu_model() -> None:
    assert ds.by_accelerator_path("out/base.json", "H100") == "out/base.h100.json"


# -- the driver, on a stand-in Ray that runs each task inline ------------------------------------------


class _Ref:
    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error


class FakeRay:
    """Enough of Ray's API for the driver: tasks run when submitted; ``accelerators`` are GPU models with
    one GPU each; ``gpu_names`` what a probe on each reports."""

    class exceptions:  # noqa: N801 - Ray's namespace
        RayError = RuntimeError

    def __init__(self, accelerators: dict[str, str] | None = None, cpus: int = 2) -> None:
        self.accelerators = accelerators or {}
        self.cpus = cpus
        self.submitted: list[dict[str, Any]] = []

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict[str, float]:
        res = {"CPU": float(self.cpus), "GPU": float(len(self.accelerators))}
        res.update({f"accelerator_type:{a}": 1.0 for a in self.accelerators})
        return res

    def nodes(self) -> list[dict[str, Any]]:  # one node per GPU model, and one without GPUs
        gpus = [{"NodeID": f"{i:056x}", "Alive": True, "Resources": {"CPU": float(self.cpus), "GPU": 1.0, f"accelerator_type:{a}": 1.0}}
                for i, a in enumerate(self.accelerators, 1)]
        return [{"NodeID": "0" * 56, "Alive": True, "Resources": {"CPU": float(self.cpus)}}, *gpus]

    def remote(self, fn: Any) -> Any:
        ray = self

        class Remote:
            def options(self, **opts: Any) -> Any:
                class Bound:
                    def remote(self, *args: Any) -> _Ref:
                        ray.submitted.append({"fn": fn.__name__, **opts})
                        try:
                            value = fn(*args)
                        except RuntimeError as err:
                            return _Ref(error=err)
                        if fn is ds._probe and opts.get("accelerator_type"):  # a GPU of that model
                            value = {**value, "device_type": "cuda", "gpu_name": ray.accelerators[opts["accelerator_type"]]}
                        return _Ref(value)

                return Bound()

        return Remote()

    def wait(self, refs: list[_Ref], num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, refs: Any) -> Any:
        if isinstance(refs, list):
            return [self.get(r) for r in refs]
        if refs.error is not None:
            raise refs.error
        return refs.value

    def cancel(self, ref: _Ref, force: bool = False) -> None:
        pass


def test_groups_refuse_what_the_cluster_cannot_run() -> None:
    ray = FakeRay({"H100": "NVIDIA H100 80GB HBM3"})
    with pytest.raises(UsageError, match="no such GPUs .*H100"):
        ds.groups(ray, ds.Cluster("auto", accelerator="A100"), "cuda", None)
    with pytest.raises(UsageError, match="need --device cuda"):
        ds.groups(ray, ds.Cluster("auto", accelerator="H100"), "cpu", 1)
    with pytest.raises(UsageError, match="no GPU"):
        ds.groups(FakeRay(), ds.Cluster("auto"), "cuda", None)
    with pytest.raises(UsageError, match="more cores than any node"):
        ds.groups(FakeRay(cpus=2), ds.Cluster("auto"), "cpu", 3)
    with pytest.raises(UsageError, match="carry no accelerator type"):
        ray = FakeRay({})
        ray.cluster_resources = lambda: {"CPU": 2.0, "GPU": 1.0}  # type: ignore[method-assign]
        ds.groups(ray, ds.Cluster("auto", each_accelerator=True), "cuda", None)


def test_every_node_is_probed_and_unlike_nodes_are_refused(monkeypatch) -> None:
    ray = FakeRay()
    ray.nodes = lambda: [{"NodeID": f"{i:056x}", "Alive": True, "Resources": {"CPU": 2.0}} for i in (1, 2)]  # type: ignore[method-assign]
    models = iter(["EPYC 7B13", "Xeon 8480"])
    monkeypatch.setattr(ds, "_probe", lambda device, threads: {"device_type": "cpu", "cpu_model": next(models),
                                                               "machine": "x86_64", "logical_cores": 2, "torch_threads": 1})
    with pytest.raises(UsageError, match="not one device .*cpu_model: EPYC 7B13 -> Xeon 8480"):
        ds.groups(ray, ds.Cluster("auto"), "cpu", 1)  # their rows could not share keys nor resume on each other
    assert [s["scheduling_strategy"].node_id for s in ray.submitted] == [f"{i:056x}" for i in (1, 2)]
    alike = iter(["EPYC 7B13", "EPYC 7B13"])
    monkeypatch.setattr(ds, "_probe", lambda device, threads: {"device_type": "cpu", "cpu_model": next(alike),
                                                               "machine": "x86_64", "logical_cores": 2, "torch_threads": 1})
    (group,) = ds.groups(ray, ds.Cluster("auto"), "cpu", 1)
    assert group.fingerprint["cpu_model"] == "EPYC 7B13"


def test_a_row_from_a_worker_unlike_the_probe_gets_a_key_of_its_own() -> None:
    group = ds.Group(None, {"device_type": "cpu", "cpu_model": "A", "machine": "x", "logical_cores": 2, "torch_threads": 1})
    same = {"key": "k", "fingerprint": dict(group.fingerprint)}
    assert ds.unlike_probe(group, "k", same) is None and same["key"] == "k"
    other = {"key": "k", "fingerprint": {**group.fingerprint, "logical_cores": 4}}
    why = ds.unlike_probe(group, "k", other)
    assert other["key"].startswith("k:unlike-probe=") and "logical_cores: 2 -> 4" in why


def test_each_accelerator_runs_every_point_once_per_gpu_model(monkeypatch, tmp_path) -> None:
    """Driver logic only: the probe and the measurement are stand-ins (no GPU here). Each GPU model gets its
    own keys (the device is in the key), every point runs once on each, and the table has a column each."""
    ray = FakeRay({"A100": "NVIDIA A100-SXM4-80GB", "H100": "NVIDIA H100 80GB HBM3"})
    monkeypatch.setattr(ds, "_probe", lambda device, threads: {
        "device_type": "cuda", "gpu_name": None, "torch_threads": 4, "cpu_model": "x", "gpu_total_memory_bytes": 1,
        "compute_capability": "9.0", "driver_version": "1", "cuda_version": "12", "torch_version": "2"})
    monkeypatch.setattr(ds, "where_it_ran", lambda: {"node_ip": "10.0.0.1", "pid": 1})
    monkeypatch.setattr(ds, "connect", lambda cluster: _Connected(ray))
    probed: dict[str, dict[str, Any]] = {}
    real_groups = ds.groups

    def groups(*a: Any, **k: Any) -> list[ds.Group]:
        out = real_groups(*a, **k)
        probed.update({g.accelerator: g.fingerprint for g in out})
        return out

    monkeypatch.setattr(ds, "groups", groups)

    def measure(target: Any, settings: Any, threads: Any) -> dict[str, Any]:  # runs "on the worker"
        fp = next(fp for fp in probed.values() if fp["gpu_name"] == _current_gpu(ray))
        return {"status": "ok", "timing": {"median_ms": 1.0 if "H100" in fp["gpu_name"] else 2.0}, "fingerprint": fp,
                "memory": {}}

    monkeypatch.setattr(sw, "_measure_on_worker", measure)
    monkeypatch.setattr(sw, "memory_guard", lambda row, device: None)
    out = tmp_path / "sweep.jsonl"
    result = sw.run_sweep(sw.plan(["cs"], {"T": [2, 4]}), device="cuda", out_path=str(out),
                          cluster=ds.Cluster("auto", each_accelerator=True))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and len({r["key"] for r in rows}) == 4 and result.new == 4
    assert {r["fingerprint"]["gpu_name"] for r in rows} == {"NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"}
    assert all(r["worker"] == {"node_ip": "10.0.0.1", "pid": 1} for r in rows)
    accel = [s.get("accelerator_type") for s in ray.submitted if s["fn"] == "_run_job"]
    assert sorted(accel) == ["A100", "A100", "H100", "H100"]
    frame = tables.per_device_frame(result.rows)
    assert list(frame.columns) == ["module", "axis", "value", "NVIDIA A100-SXM4-80GB median ms", "NVIDIA H100 80GB HBM3 median ms"]
    assert frame["NVIDIA H100 80GB HBM3 median ms"].tolist() == [1.0, 1.0]
    exps = sw.fit_exponents(result.rows)
    assert {e["device"] for e in exps} == {r["device_slug"] for r in rows}  # fitted per GPU model, never mixed
    again = sw.run_sweep(sw.plan(["cs"], {"T": [2, 4]}), device="cuda", out_path=str(out), resume=True,
                         cluster=ds.Cluster("auto", each_accelerator=True))
    assert (again.new, again.reused) == (0, 4)


class _Connected:
    def __init__(self, ray: Any) -> None:
        self.ray = ray

    def __enter__(self) -> Any:
        return self.ray

    def __exit__(self, *exc: Any) -> None:
        return None


def _current_gpu(ray: FakeRay) -> str:
    return ray.accelerators[ray.submitted[-1]["accelerator_type"]]


# -- a real local Ray ------------------------------------------------------------------------------------

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()


def _keys_and_flops(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {r["key"]: r["flops"] for r in rows}


def test_a_ray_sweep_writes_the_serial_runs_keys_and_flops(local_ray, tmp_path) -> None:
    serial = sw.run_sweep(_points(), **TIMING, threads=1, out_path=str(tmp_path / "serial.jsonl"))
    out = tmp_path / "ray.jsonl"
    on_ray = sw.run_sweep(_points(), **TIMING, out_path=str(out), cluster=ds.Cluster("auto"))
    assert len(on_ray.rows) == 12 and on_ray.new == 12
    assert _keys_and_flops(on_ray.rows) == _keys_and_flops(serial.rows)
    assert [r["key"] for r in on_ray.rows] == [r["key"] for r in serial.rows]  # in plan order
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["key"] for r in written) == sorted(r["key"] for r in serial.rows)
    assert all(r["status"] == "ok" and r["latency_ms"] > 0 for r in written)
    assert all(r["fingerprint"]["torch_threads"] == 1 and r["worker"]["pid"] != os.getpid() for r in written)
    # the serial run on this machine reuses every row the cluster wrote
    again = sw.run_sweep(_points(), **TIMING, threads=1, out_path=str(out), resume=True)
    assert (again.new, again.reused) == (0, 12)


def test_a_worker_killed_mid_task_is_retried_and_every_row_is_written_once(local_ray, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "died"
    monkeypatch.setenv(ds.DIE_IN_TASK_ENV, f"eca@default:T=4;once={marker}")  # the first attempt at that point dies
    out = tmp_path / "ray.jsonl"
    result = sw.run_sweep(_points(), **TIMING, out_path=str(out), cluster=ds.Cluster("auto", max_retries=1))
    assert marker.exists()  # a worker did die
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = [r["key"] for r in rows]
    assert len(keys) == 12 and len(set(keys)) == 12 and result.new == 12
    assert all(r["status"] == "ok" for r in rows)


def test_a_point_whose_worker_always_dies_becomes_an_error_row(local_ray, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ds.DIE_IN_TASK_ENV, "cs@default:HW=8")
    points = sw.plan(["cs"], {"HW": [4, 8]})
    result = sw.run_sweep(points, **TIMING, out_path=str(tmp_path / "r.jsonl"), cluster=ds.Cluster("auto", max_retries=1))
    status = {r["value"]: r["status"] for r in result.rows}
    assert status[4] == "ok"
    assert status[8] == "error: the worker died (1 retries spent): WorkerCrashedError"
    assert [r["flops"] for r in result.rows] == [sw.analytic_row(p)[0]["flops"] for p in points]  # still counted
    monkeypatch.delenv(ds.DIE_IN_TASK_ENV)
    with pytest.warns(AttnBenchWarning, match="measured again .*its worker died"):  # an accident, not a result
        again = sw.run_sweep(points, **TIMING, out_path=str(tmp_path / "r.jsonl"), resume=True, cluster=ds.Cluster("auto"))
    assert (again.new, again.reused) == (1, 1) and all(r["status"] == "ok" for r in again.rows)


def test_a_driver_killed_mid_sweep_loses_nothing_and_resume_finishes(local_ray, tmp_path) -> None:
    address = local_ray.get_runtime_context().gcs_address
    out = tmp_path / "sweep.jsonl"
    cmd = [sys.executable, "-m", "attnbench", "sweep", "-m", ",".join(MODULES), "--T", "2,4", "--HW", "4,8",
           "--device", "cpu", "--reps", "2", "--target-s", "0.2", "--ray", address, "--out", str(out), "--json"]
    before, killed_mid_run = sigkill_after(cmd, out, rows=2, timeout_s=120)
    assert before, "no row was finished before the kill"
    # resumed here (this process is a driver of the same cluster; its workers are started already)
    resumed = sw.run_sweep(_points(), device="cpu", min_reps=2, target_s=0.2, out_path=str(out), resume=True,
                           cluster=ds.Cluster("auto"))
    assert resumed.new + resumed.reused == 12 and resumed.reused >= len(before)
    rows = rows_of(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == 12 and len(set(keys)) == 12, "a row is missing or appears twice"
    assert {json.dumps(r, sort_keys=True) for r in before} <= {json.dumps(r, sort_keys=True) for r in rows}
    if killed_mid_run:
        assert len(before) < 12


def test_speed_and_snapshot_on_ray(local_ray, tmp_path) -> None:
    """The commands in-process, joined to the running Ray: speed rows carry the keys a local run with one
    thread writes, and a snapshot timed on a worker is a valid baseline that `check` reads."""
    runner = CliRunner()
    args = ["speed", "--device", "cpu", "-m", "eca", "-m", "se", "--reps", "2", "--target-s", "0.01", "--warmup-s", "0",
            "--no-roofline", "--out", str(tmp_path / "speed.jsonl")]
    r = runner.invoke(app, [*args, "--ray", "auto"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "speed.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["worker"]["pid"] != os.getpid() for r in rows)
    r = runner.invoke(app, [*args, "--threads", "1", "--resume"])  # here, one thread: every row reused
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "speed.jsonl").read_text().splitlines()) == 2
    base = tmp_path / "base.json"
    r = runner.invoke(app, ["snapshot", "--out", str(base), "-m", "eca", "--presets", "default", "--device", "cpu",
                            "--rounds", "2", "--round-s", "0.01", "--ray", "auto"])
    assert r.exit_code == 0, r.output
    doc = json.loads(base.read_text())
    assert doc["worker"]["pid"] != os.getpid() and doc["fingerprint"]["torch_threads"] == 1
    assert doc["entries"][0]["timing"]["rounds"] == 2
    r = runner.invoke(app, ["check", "--baseline", str(base), "--flops-only"])
    assert r.exit_code == 0, r.output
