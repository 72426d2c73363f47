"""Cross-check attnbench's timer against an independent one, on the same module and input, interleaved.

* CPU: :func:`attnbench.measuring.timing.time_callable` medians against
  ``torch.utils.benchmark.Timer(...).blocked_autorange()`` medians;
* CUDA: our CUDA-event medians (pipelined) against ``triton.testing.do_bench`` (median).

The two timers alternate ``--rounds`` times per block (so a change in the machine's load falls on both),
and the script prints, per block, the median of each timer's round medians and their ratio (goal: within
5% on an idle CPU, within 2% on a GPU). A benchmark, not a test: run it on an idle machine.

    python scripts/timing_crosscheck.py --device cpu --modules nl,cs,se --T 8 --H 14 --W 14
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modules", default="nl,cs,se,eca")
    ap.add_argument("--impl", default=None, help="naive or sdpa for nl and cs")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=0.5)
    ap.add_argument("--T", type=int)
    ap.add_argument("--H", type=int)
    ap.add_argument("--W", type=int)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch

    from attnbench import api, bench
    from attnbench.measuring import device as dev
    from attnbench.measuring.stats import median
    from attnbench.measuring.timing import build_workload, time_callable

    if args.threads:
        torch.set_num_threads(args.threads)
    d = dev.resolve_device(args.device)
    sizes = {"T": args.T, "H": args.H, "W": args.W}
    out = []
    for name in [m for m in args.modules.split(",") if m]:
        spec = api.get_block(name)
        opts = {"impl": args.impl} if args.impl and any(o.name == "impl" for o in spec.options) else {}
        case = api.resolve(name, sizes=sizes, options=opts)
        t = bench.block_target(case)
        with torch.device(dev.placement(d)):
            module = t.build()
        work = build_workload(module, t.input_shapes, device=d, dtype=args.dtype)
        ours, theirs = [], []
        with torch.inference_mode():
            for _ in range(args.rounds):
                ours.append(time_callable(work, device=d, min_reps=5, target_s=args.target_s, max_warmup_s=1.0).median)
                if d.type == "cuda":
                    from triton.testing import do_bench

                    theirs.append(float(do_bench(work, warmup=25, rep=int(1000 * args.target_s), return_mode="median")) / 1e3)
                else:
                    from torch.utils.benchmark import Timer

                    timer = Timer(stmt="work()", globals={"work": work}, num_threads=torch.get_num_threads())
                    theirs.append(timer.blocked_autorange(min_run_time=args.target_s).median)
        a, b = median(ours), median(theirs)
        other = "triton do_bench" if d.type == "cuda" else "torch.utils.benchmark blocked_autorange"
        rec = {"block": name, "variant": t.variant, "impl": t.options.get("impl"), "device": str(d), "dtype": args.dtype,
               "threads": torch.get_num_threads(), "ours_median_ms": a * 1e3, "other": other,
               "other_median_ms": b * 1e3, "ratio": a / b, "ours_rounds_ms": [x * 1e3 for x in ours],
               "other_rounds_ms": [x * 1e3 for x in theirs]}
        out.append(rec)
        print(f"{name:5s} {t.variant:22s} impl={str(rec['impl']):5s} ours {a * 1e3:10.4f} ms   {other} {b * 1e3:10.4f} ms"
              f"   ratio {a / b:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
