"""`python -m bench [--quick] [--device cpu|cuda] [--only NAME …]`: every figure side by side.

Each figure is a ratio or a pair measured in this one run, alternating A and B over several
repetitions; the median is reported with min and max. Results go to bench/results.json and
a table on stdout, each figure with its target and whether it is met.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import Figure, machine_info, quiet_libraries

GROUPS = ("overhead", "startup", "switching", "speed", "mixed", "throughput", "llm_load", "chat", "vision",
          "training", "upscale", "llm_training", "devices", "yolo", "flow", "flow_quant",
          "allocator")
RESULTS = Path(__file__).resolve().parent / "results.json"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions and steps (under 5 minutes on 2 cores)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the models run (default: cpu)")
    p.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="run only these groups")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS.name} beside this file)")
    return p.parse_args(argv)


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "MiB":
        return f"{x:.0f}"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "median", "min", "max", "unit", "target", "met")]
    for f in figures:
        if f.not_measured:
            rows.append((f.title, "not measured: " + f.not_measured.splitlines()[0][:90], "", "", "", f.target, "—"))
            continue
        met = "—" if f.met is None else ("yes" if f.met else "MISSED")
        rows.append((f.title, _fmt(f.median, f.unit), _fmt(f.min, f.unit), _fmt(f.max, f.unit), f.unit, f.target, met))
    widths = [max(len(r[i]) for r in rows if not r[1].startswith("not measured") or i != 1) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        if r[1].startswith("not measured"):
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}  [target {r[5]}]")
        else:
            lines.append("  ".join(c.ljust(w) if i in (0, 4, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def _load() -> float | None:
    try:
        return round(__import__("os").getloadavg()[0], 2)
    except OSError:
        return None


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    from modules.allocator import keep_freed_memory

    keep_freed_memory()  # as `python -m webui` does at start, so the studio measured here is the one served
    quiet_libraries()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: torch sees no CUDA GPU", file=sys.stderr)
            return 2
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    started = time.perf_counter()
    load_before = _load()
    figures: list[Figure] = []
    for group in GROUPS:
        if group not in args.only:
            continue
        log(f"[{time.perf_counter() - started:6.1f}s] {group} …")
        module = __import__(f"bench.{group}", fromlist=["run"])
        try:
            figures += module.run(args.device, args.quick, log)
        except Exception as exc:  # one broken group must not hide the others' figures
            figures.append(Figure.missing(group, group, f"{type(exc).__name__}: {exc}"[:400]))
    elapsed = time.perf_counter() - started
    result = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(elapsed, 1),
        "machine": machine_info(args.device),
        # Other work on the machine makes every figure noisier; the load average says how busy it was.
        "load_average": {"start": load_before, "end": _load()},
        "figures": [f.to_json() for f in figures],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    m = result["machine"]
    gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ""
    print(f"Atelier benchmark — {m['cpu']}, {m['cores_logical']} cores, {m['ram_gib']} GiB RAM{gpu}; "
          f"device {args.device}; {'quick' if args.quick else 'full'} run, {elapsed:.0f} s")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    busy = max(load_before or 0, result["load_average"]["end"] or 0)
    if m["cores_logical"] and busy > m["cores_logical"] / 2:
        print(f"note: the machine was busy during this run (1-minute load average up to {busy:.1f} on "
              f"{m['cores_logical']} cores): the spread of each figure shows how much that disturbed it")
    print(table(figures))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
