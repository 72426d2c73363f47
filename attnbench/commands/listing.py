"""`attnbench list`: the blocks (built in, from plugins) and the networks, with their presets and options."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from attnbench.commands.common import guarded, out
from attnbench.defaults import SCHEMA


def _options(options: Any) -> list[dict[str, Any]]:
    return [{"name": o.name, "type": o.type.__name__, "default": o.default,
             "choices": list(o.choices) if o.choices else None, "help": o.help} for o in options]


def records() -> list[dict[str, Any]]:
    """One record per block and per network (``kind`` says which), for ``--json``."""
    from attnbench.blocks.registry import all_blocks, origin
    from attnbench.networks.registry import all_networks

    blocks = [{
        "schema": SCHEMA, "kind": "block", "module": s.name, "title": s.title, "paper": s.paper, "origin": origin(s.name),
        "closed_forms": s.closed_forms(),
        "presets": [{"preset": p.name, "input_shape": p.shape.as_list(), "options": dict(p.options),
                     "preset_source": p.source} for p in s.presets],
        "options": _options(s.options),
    } for s in all_blocks()]
    networks = [{
        "schema": SCHEMA, "kind": "network", "network": n.name, "title": n.title, "paper": n.paper,
        "attn": list(n.attn_choices),
        "presets": [{"preset": p.name, "frames": p.frames, "size": p.size, "options": dict(p.options),
                     "preset_source": p.source} for p in n.presets],
        "options": _options(n.options),
    } for n in all_networks()]
    return blocks + networks


def list_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per block and per network")] = False,
) -> None:
    """Blocks (built in and from plugins), their papers, presets and options; then the networks."""
    recs = records()
    if json_out:
        print("\n".join(json.dumps(r, default=str) for r in recs))
        return
    blocks = [(r["module"], r["paper"] if r["origin"] == "attnbench" or r["origin"] in r["paper"]
               else f"{r['paper']} ({r['origin']})", r["title"],
               "\n".join(f"{p['preset']}: {p['input_shape']}" for p in r["presets"]), _defaults(r),
               ", ".join(r["closed_forms"]) or "none declared") for r in recs if r["kind"] == "block"]
    out.print(_table("attnbench blocks", ("module", "paper", "block", "presets [B,C,T,H,W]", "options (default)",
                                           "closed forms"), blocks))
    networks = [(r["network"], r["paper"], r["title"],
                 "\n".join(f"{p['preset']}: {p['frames']} x {p['size']}x{p['size']}" for p in r["presets"]),
                 ", ".join(r["attn"]), _defaults(r)) for r in recs if r["kind"] == "network"]
    out.print(_table("attnbench networks (flops/speed --network NAME --attn BLOCK)",
                     ("network", "paper", "title", "presets (frames x size)", "attn", "options (default)"), networks))


def _defaults(record: dict[str, Any]) -> str:
    return "\n".join(f"{o['name']}={o['default']}" for o in record["options"]) or "-"


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Any:
    """A Rich table whose cells are inert text (names and titles may come from plugins and users' files)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row))
    return table


list_cmd = guarded(list_cmd)
