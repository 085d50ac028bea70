"""Fuzz the exact and tolerance-contract passes with seeded random graphs, verified on ONNX Runtime.

    python benchmarks/fuzz.py --graphs 1000             # the full run: every graph through each pass alone
                                                         # and through all of them chained
    python benchmarks/fuzz.py --graphs 50 --seed 7      # another slice of graph seeds
    python benchmarks/fuzz.py --graphs 20 --random-pipeline   # one random 1-4 pass pipeline per graph (CI's mode)

Graph seeds are SEED, SEED+1, ...; a failure is reproduced with
`yolograph.testing.fuzz.fuzz_one(seed, pipeline)`. Prints a summary and every non-ok run, writes
benchmarks/results/fuzz.json (or --out). Exit code 1 when any run is a violation, crash or invalid graph.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

FAILING = ("violation", "crash", "invalid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="first graph seed")
    parser.add_argument("--random-pipeline", action="store_true",
                        help="one seeded random pipeline per graph instead of every pass alone and chained")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz.json"))
    args = parser.parse_args(argv)

    import onnxruntime

    from yolograph.progress import track
    from yolograph.testing.fuzz import fuzz, fuzzed_passes

    onnxruntime.set_default_logger_severity(4)  # failures are reported below, not as ORT log lines
    warnings.filterwarnings("ignore")
    passes = fuzzed_passes()
    seeds = range(args.seed, args.seed + args.graphs)
    start = time.perf_counter()
    outcomes = list(fuzz(track(seeds, "graphs", total=len(seeds)), every_pass=not args.random_pipeline,
                         passes=passes))
    seconds = time.perf_counter() - start
    counts = Counter(o.status for o in outcomes)
    per_pass = {p: Counter(o.status for o in outcomes if p in o.pipeline) for p in passes}
    summary = {
        "graphs": args.graphs,
        "first_seed": args.seed,
        "mode": "random-pipeline" if args.random_pipeline else "every-pass",
        "passes": passes,
        "runs": len(outcomes),
        "counts": dict(counts),
        "per_pass": {p: dict(c) for p, c in per_pass.items()},
        "mean_nodes": round(sum(o.nodes for o in outcomes) / max(len(outcomes), 1), 1),
        "seconds": round(seconds, 1),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work",
        "failures": [o.to_json() for o in outcomes if o.status in FAILING],
        "refused": [o.to_json() for o in outcomes if o.status == "refused"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.graphs} graphs (seeds {args.seed}..{args.seed + args.graphs - 1}), {len(outcomes)} pipeline runs "
          f"through {', '.join(passes)} in {seconds:.0f} s")
    print("  " + ", ".join(f"{status} {counts.get(status, 0)}" for status in ("ok", "refused", *FAILING)))
    for outcome in outcomes:
        if outcome.status in FAILING:
            print(f"  {outcome.status}: seed {outcome.seed} {outcome.pipeline}: {outcome.message}")
    refusals = Counter(o.message.split(";")[0] for o in outcomes if o.status == "refused")
    for message, count in refusals.most_common():
        print(f"  refused x{count}: {message}")
    print(f"wrote {args.out}")
    return 1 if any(counts.get(s) for s in FAILING) else 0


if __name__ == "__main__":
    sys.exit(main())
