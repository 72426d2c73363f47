"""The baseline document of ``attnbench snapshot`` (schema ``attnbench.snapshot/1``), declared with pydantic.

``attnbench check`` trusts nothing in a baseline before the whole document has been validated against the
models below: every field's type (strict: ``"two"`` is not a thread count, ``1.0`` not a number of rounds,
``true`` not an integer), bounds on everything that sets how long a check runs (:data:`MAX_ROUNDS`,
:data:`MAX_ROUND_S`, :data:`MAX_MIN_REPS`, :data:`MAX_WARMUP_S`, :data:`MAX_TIMED_S_PER_BLOCK`), finite
non-negative times and byte counts, round sizes that add up to the samples, and the internal consistency
of every entry: its FLOP total, MACs and per-category FLOPs must follow from its per-category cells, its
stored round medians from its samples. Each entry's block, preset and options must be known to the code
(the registry), so that a misspelt module is a malformed baseline (exit 2), not a regression.

:func:`read_document` reads the file first: a regular file of at most :data:`MAX_FILE_BYTES`, UTF-8
JSON, nesting and integer sizes Python can parse. :func:`problem` returns the first problem as one line,
``<where>: <what>`` (``entries[2] (cs@banet).flops: total is 5 but its cells add up to 7``), with
everything taken from the file made printable (:func:`attnbench.text.clean`).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

from attnbench.errors import UsageError
from attnbench.flops.cost import CATEGORIES, KINDS
from attnbench.measuring.malloc import MODES as MALLOC_MODES
from attnbench.text import clean

SCHEMA = "attnbench.snapshot/1"
SIZES = ("B", "C", "T", "H", "W")

MAX_FILE_BYTES = 256 * 2**20
MAX_ROUNDS = 1000
MAX_ROUND_S = 60.0
MAX_MIN_REPS = 1000
MAX_WARMUP_S = 60.0
MAX_THREADS = 1024
MAX_TIMED_S_PER_BLOCK = 3600.0  # rounds x (round_s + max_warmup_s): at most an hour of timing per block
MAX_ENTRIES = 100_000
MAX_TEXT = 1000  # characters of a key, a name, a fingerprint string
CLOCKS = ("wall", "cpu")
TIMING_MODES = ("auto", "graph", "pipelined", "isolated")
DTYPES = ("fp32", "fp16", "bf16")

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Ms = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Scalar = Union[Text, int, Annotated[float, Field(allow_inf_nan=False)], StrictBool, None]
FingerprintValue = Union[Scalar, Annotated[list[Scalar], Field(max_length=256)], Annotated[dict[Text, Scalar], Field(max_length=256)]]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Settings(_Model):
    """How the baseline was timed (the fields of :class:`attnbench.gate.TimingPlan`)."""

    device: Annotated[str, Field(pattern=r"^(?i:cpu|cuda(:\d{1,4})?)$")]
    dtype: Literal[DTYPES]
    threads: Optional[Annotated[int, Field(ge=1, le=MAX_THREADS)]] = None
    rounds: Annotated[int, Field(ge=1, le=MAX_ROUNDS)]
    round_s: Annotated[float, Field(gt=0, le=MAX_ROUND_S, allow_inf_nan=False)]
    min_reps: Annotated[int, Field(ge=1, le=MAX_MIN_REPS)] = 5
    max_warmup_s: Annotated[float, Field(ge=0, le=MAX_WARMUP_S, allow_inf_nan=False)] = 0.3
    clock: Literal[CLOCKS] = "wall"
    malloc: Literal[MALLOC_MODES] = "system"
    timing: Literal[TIMING_MODES] = "auto"

    @model_validator(mode="after")
    def _bounded_time(self) -> "Settings":
        timed_s = self.rounds * (self.round_s + self.max_warmup_s)
        if timed_s > MAX_TIMED_S_PER_BLOCK:
            raise ValueError(f"rounds x (round_s + max_warmup_s) is {timed_s:.4g} s per block, more than the "
                             f"{MAX_TIMED_S_PER_BLOCK:.0f} s allowed")
        return self


class Fingerprint(_Model):
    """The device a baseline was timed on; scalars (and short lists or objects of them) only."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, FingerprintValue] = Field(init=False)
    device_type: Literal["cpu", "cuda"]


class Timing(_Model):
    """A timed block's samples: per-call times in milliseconds, in rounds."""

    samples_ms: Annotated[list[Ms], Field(min_length=1)]
    round_sizes: Annotated[list[Positive], Field(min_length=1, max_length=MAX_ROUNDS)]
    round_medians_ms: Optional[Annotated[list[Ms], Field(max_length=MAX_ROUNDS)]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "Timing":
        total = sum(self.round_sizes)
        if total != len(self.samples_ms):
            raise ValueError(f"round_sizes add up to {total} but there are {len(self.samples_ms)} samples_ms")
        if self.round_medians_ms is not None:
            if len(self.round_medians_ms) != len(self.round_sizes):
                raise ValueError(f"{len(self.round_medians_ms)} round_medians_ms for {len(self.round_sizes)} rounds")
            for i, (stored, derived) in enumerate(zip(self.round_medians_ms, round_medians(self.samples_ms, self.round_sizes))):
                if not math.isclose(stored, derived, rel_tol=1e-9, abs_tol=1e-12):
                    raise ValueError(f"round_medians_ms[{i}] is {stored:.6g} but the median of that round's samples is {derived:.6g}")
        return self


class Memory(_Model):
    peak_bytes: Optional[Count] = None


class Reference(_Model):
    status: Text
    timing: Optional[Timing] = None

    @model_validator(mode="after")
    def _timed_if_ok(self) -> "Reference":
        if self.status == "ok" and self.timing is None:
            raise ValueError("status is ok but there is no timing")
        return self


class Flops(_Model):
    """Exact FLOPs: the per-category cells (multiply-accumulates and single ops) and what follows from them."""

    total: Count
    macs: Count
    by_category: dict[Name, Count]
    cells: dict[Name, dict[Name, Count]]

    @model_validator(mode="after")
    def _consistent(self) -> "Flops":
        for category, kinds in self.cells.items():
            if category not in CATEGORIES:
                raise ValueError(f"unknown op category '{category}' in cells; valid: {', '.join(CATEGORIES)}")
            for kind in kinds:
                if kind not in KINDS:
                    raise ValueError(f"cells.{category}: unknown kind '{kind}'; valid: {', '.join(KINDS)}")
        for category in self.by_category:
            if category not in CATEGORIES:
                raise ValueError(f"unknown op category '{category}' in by_category; valid: {', '.join(CATEGORIES)}")

        def cell(category: str, kind: str) -> int:
            return (self.cells.get(category) or {}).get(kind, 0)

        for category in CATEGORIES:
            derived = 2 * cell(category, "mac") + cell(category, "op")
            stored = self.by_category.get(category, 0)
            if stored != derived:
                raise ValueError(f"by_category.{category} is {stored:,} but its cells give {derived:,} "
                                 f"(2 x mac + op); the baseline contradicts itself")
        macs = sum(cell(c, "mac") for c in CATEGORIES)
        if self.macs != macs:
            raise ValueError(f"macs is {self.macs:,} but its cells add up to {macs:,}; the baseline contradicts itself")
        total = 2 * macs + sum(cell(c, "op") for c in CATEGORIES)
        if self.total != total:
            raise ValueError(f"total is {self.total:,} but its cells add up to {total:,} FLOPs; "
                             f"the baseline contradicts itself")
        return self


class Entry(_Model):
    """One block case: what it is, its parameters and exact FLOPs, and (timed) its samples and memory."""

    key: Name
    module: Name
    preset: Optional[Name] = None
    base_preset: Optional[Name] = None
    input_shape: Annotated[list[Positive], Field(min_length=5, max_length=5)]
    options: dict[Name, Scalar] = Field(default_factory=dict)
    params: Count
    flops: Flops
    status: Optional[Text] = None
    timing: Optional[Timing] = None
    memory: Optional[Memory] = None

    @model_validator(mode="after")
    def _known_to_the_code(self) -> "Entry":
        if self.preset is None and self.base_preset is None:
            raise ValueError("a custom-shape entry (preset null) needs a base_preset")
        from attnbench import cases

        try:
            if self.preset is not None:
                case = cases.resolve(self.module, self.preset)
                known = {o.name: o for o in case.spec.options}
                for name, value in self.options.items():  # an option the code no longer has is only noted
                    if name in known:
                        known[name].parse(value)
            else:
                cases.resolve(self.module, self.base_preset, dict(zip(SIZES, self.input_shape)), self.options)
        except (UsageError, ValueError, TypeError, OverflowError) as e:
            raise ValueError(f"{_first_line(e)}; if a block or preset was renamed or removed, "
                             f"regenerate the baseline with `attnbench snapshot`") from None
        return self


class Selection(_Model):
    modules: Optional[list[Name]] = None
    presets: Optional[Text] = None
    sizes: dict[Literal[SIZES], Positive] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_modules(self) -> "Selection":
        from attnbench.blocks.registry import get_block

        for m in self.modules or []:
            try:
                get_block(m)
            except UsageError as e:
                raise ValueError(_first_line(e)) from None
        return self


class Snapshot(_Model):
    """The whole baseline document."""

    schema_: Literal[SCHEMA] = Field(alias="schema")
    created_utc: Optional[Text] = None
    environment: Optional[dict[Name, Scalar]] = None
    selection: Optional[Selection] = None
    timed: StrictBool
    settings: Optional[Settings] = None
    fingerprint: Optional[Fingerprint] = None
    reference: Optional[Reference] = None
    entries: Annotated[list[Entry], Field(min_length=1, max_length=MAX_ENTRIES)]

    @model_validator(mode="after")
    def _complete(self) -> "Snapshot":
        keys: set[str] = set()
        for e in self.entries:
            if e.key in keys:
                raise ValueError(f"entry {e.key} appears twice")
            keys.add(e.key)
        if not self.timed:
            return self
        for name in ("settings", "fingerprint", "reference"):
            if getattr(self, name) is None:
                raise ValueError(f"a timed baseline needs '{name}'")
        rounds = self.settings.rounds
        timings = [("reference", self.reference.timing)] if self.reference.status == "ok" else []
        for i, e in enumerate(self.entries):
            if e.status is None:
                raise ValueError(f"entries[{i}] ({e.key}): a timed entry needs a 'status'")
            if e.status == "ok":
                if e.timing is None or e.memory is None:
                    raise ValueError(f"entries[{i}] ({e.key}): a timed entry with status ok needs 'timing' and 'memory'")
                timings.append((f"entries[{i}] ({e.key})", e.timing))
        for where, t in timings:
            if len(t.round_sizes) != rounds:
                raise ValueError(f"{where}.timing has {len(t.round_sizes)} rounds, settings.rounds is {rounds}")
        return self


# -- helpers -----------------------------------------------------------------------------------------


def round_medians(samples: Sequence[float], sizes: Sequence[int]) -> list[float]:
    """The median of each round of ``samples`` (``sizes[i]`` samples in round i)."""
    from attnbench.measuring.stats import median

    out, i = [], 0
    for n in sizes:
        out.append(median(samples[i:i + n]))
        i += n
    return out


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _where(loc: Sequence[Any], doc: Any, missing: bool = False) -> str:
    """``entries[2] (cs@banet).flops.total`` from a pydantic error location; the tags pydantic adds for the
    members of a union (``constrained-str``, ``list[...]``) are not places in the file and are left out."""
    out, node = "", doc
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, Mapping) and isinstance(part, str) and (part in node or (last and missing)):
            out += ("." if out else "") + part
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if 0 <= part < len(node) else None
            if out.startswith("entries[") and out.count("[") == 1 and isinstance(node, Mapping) and isinstance(node.get("key"), str):
                out += f" ({node['key'][:80]})"
    return out or "top level"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(err: ValidationError, doc: Any) -> str:
    """The first problem pydantic found, as ``<where>: <what>`` (plus how many other places have one). The
    errors pydantic reports for each member of a union at one place are one problem."""
    errors = err.errors(include_url=False)
    places: dict[str, list[dict[str, Any]]] = {}
    for e in errors:
        places.setdefault(_where(e.get("loc", ()), doc, e.get("type") == "missing"), []).append(e)
    where, errs = next(iter(places.items()))
    msgs = []
    for e in errs:
        m = str(e.get("msg", "invalid"))
        m = m[len("Value error, "):] if m.startswith("Value error, ") else m
        if m not in msgs:
            msgs.append(m)
    if len(msgs) > 1:  # a union: "Input should be a valid string or a valid integer or ..."
        msg = "Input should be " + " or ".join(m.removeprefix("Input should be ") for m in msgs)
    else:
        msg = msgs[0]
    first = errs[0]
    if not str(first.get("msg", "")).startswith("Value error, ") and first.get("type") != "missing" \
            and isinstance(first.get("input"), (str, int, float, bool, type(None))):
        msg += f", got {_short(first['input'])}"
    elif first.get("type") in ("list_type", "dict_type", "string_type", "int_type", "float_type", "bool_type") \
            or len(msgs) > 1:
        msg += f", got {type(first.get('input')).__name__ if not isinstance(first.get('input'), dict) else 'an object'}"
    more = sum(1 for w in places if not w.startswith(where))  # a union member's inner errors are this problem
    text = f"{where}: {msg}" + (f" (and problems in {more} more place{'s' if more > 1 else ''})" if more else "")
    text = clean(text)
    return text if len(text) <= 400 else text[:397] + "..."


def problem(doc: Any) -> str | None:
    """The first thing wrong with a baseline document (one printable line), or None when it can be used."""
    if not isinstance(doc, dict):
        return f"top level: must be a JSON object, got {type(doc).__name__}"
    try:
        Snapshot.model_validate(doc)
    except ValidationError as e:
        return describe(e, doc)
    except RecursionError:
        return "top level: nested too deeply"
    return None


def read_document(path: str | Path, what: str = "baseline") -> Any:
    """Read and parse the JSON file ``path``: a regular file of at most :data:`MAX_FILE_BYTES`. Every
    problem is one line (UsageError, exit code 2)."""
    p = Path(path)
    name = clean(p)

    def fail(why: str) -> UsageError:
        return UsageError(f"cannot read {what} {name}: {why}")

    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as e:
        raise fail(clean(e.strerror or e)) from None
    if stat.S_ISDIR(st.st_mode):
        raise fail("it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise fail("not a regular file (a device, pipe or socket)")
    if st.st_size > MAX_FILE_BYTES:
        raise fail(f"{st.st_size:,} bytes, more than the {MAX_FILE_BYTES // 2**20} MiB a baseline may have")
    try:
        with open(p, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise fail("not a regular file (a device, pipe or socket)")
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise fail(clean(e.strerror or e)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise fail(f"more than the {MAX_FILE_BYTES // 2**20} MiB a baseline may have")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} {name} is not valid JSON (line {e.lineno}, column {e.colno}: {clean(e.msg)})") from None
    except RecursionError:
        raise UsageError(f"{what} {name} is malformed: top level: nested too deeply") from None
    except (ValueError, MemoryError) as e:  # e.g. an integer literal with more digits than Python converts
        raise UsageError(f"{what} {name} is not valid JSON: {clean(_first_line(e))[:200]}") from None


def load(path: str | Path) -> dict[str, Any]:
    """Read ``path`` and validate it as a baseline; every problem is one line (UsageError, exit code 2)."""
    doc = read_document(path)
    why = problem(doc)
    if why:
        raise UsageError(f"baseline {clean(path)} is malformed: {why}")
    return doc
