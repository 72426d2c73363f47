"""What a results row must hold to be reused by ``--resume``: declared pydantic models of the fields the
tables, plots and ratios read (any other field may be there). A row that does not fit is measured again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from attnbench.defaults import SCHEMA
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

Count = Annotated[StrictInt, Field(ge=0)]
Number = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Timing(_Row):
    n: Count | None = None
    median_ms: Number | None = None
    iqr_ms: Number | None = None
    p10_ms: Number | None = None
    p90_ms: Number | None = None
    noisy: StrictBool | None = None
    samples_ms: list[Number] | None = None


class _Settings(_Row):
    dtype: StrictStr
    batch: Annotated[StrictInt, Field(ge=1)] = 1


class SpeedRow(_Row):
    """A row of ``speed``/``table-vi`` (:func:`attnbench.bench.measure_target`)."""

    key: StrictStr
    kind: StrictStr
    module: StrictStr | None = None  # blocks (and the gate's reference workload)
    network: StrictStr | None = None  # networks, with attn
    attn: StrictStr | None = None
    preset: StrictStr
    status: StrictStr
    input_shapes: Annotated[list[list[Count]], Field(min_length=1)]
    settings: _Settings
    flops: Count
    precision: StrictStr | None = None
    impl: StrictStr | None = None
    timing_mode: StrictStr | None = None
    timing: _Timing | None = None
    memory: dict[str, Any] | None = None
    memory_prediction: dict[str, Any] | None = None
    achieved: dict[str, Any] | None = None
    vps: Number | None = None


class SweepRow(_Row):
    """A row of ``sweep`` (:func:`attnbench.sweep.analytic_row`, measured or not)."""

    key: StrictStr
    kind: StrictStr
    module: StrictStr
    axis: StrictStr
    value: Annotated[StrictInt, Field(ge=1)]
    status: StrictStr
    flops: Count | None = None
    macs: Count | None = None
    params: Count | None = None
    latency_ms: Number | None = None
    peak_bytes: Count | None = None
    timing: _Timing | None = None


class MaxFitRow(_Row):
    """A ``sweep --max-fit`` row."""

    key: StrictStr
    module: StrictStr
    axis: StrictStr


ROW_SCHEMA = SCHEMA  # version 2: rows name things as `flops` does (module / network + attn, preset)


def upgrade(row: dict[str, Any]) -> dict[str, Any]:
    """A row of an older results file in the current schema (read, never rewritten): version 1 speed rows
    said ``name`` and ``variant`` (a network's variant was ``attn@preset``)."""
    if row.get("schema") is None and "name" in row and "variant" in row and "key" in row:
        row = dict(row)
        name, variant = row.pop("name"), str(row.pop("variant"))
        if row.get("kind") == "network":
            attn, _, preset = variant.partition("@")
            row.update(network=name, attn=attn, preset=preset)
        else:
            row.update(module=name, preset=variant)
        row["schema"] = 1
    return row


def problem(model: type[BaseModel], row: Mapping[str, Any]) -> str | None:
    """The first reason ``row`` does not fit ``model`` (``field.path: message``), or None."""
    try:
        model.model_validate(dict(row))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "row"
        return f"{where}: {first['msg']}"
    return None


WORKER_DIED = "error: the worker died"  # a Ray task's status when its worker died more often than Ray retries


def reusable_problem(model: type[BaseModel], row: Mapping[str, Any]) -> str | None:
    """Why ``--resume`` measures ``row`` again instead of reusing it: it does not fit ``model``, or its
    worker died (an accident of the cluster, not a result of the point), or None."""
    status = row.get("status")
    if isinstance(status, str) and status.startswith(WORKER_DIED):
        return "its worker died"
    return problem(model, row)
