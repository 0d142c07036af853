"""Run every benchmark (benchmarks/bench_*.py) and write benchmarks/results.json.

    python -m benchmarks.run [name ...]

Each module has ``run() -> list[dict]``: one record per comparison with ``name``,
``ours``, ``peer``, ``peer_value``, ``unit`` and ``lower_is_better``; this script adds the
ratio (peer / ours when lower is better, so > 1 means we are faster) and the machine.
Performance lives here, never in timed unit tests.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    wanted = set(sys.argv[1:] if argv is None else argv)
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    unknown = wanted - {m.removeprefix("bench_") for m in modules}
    if unknown:
        print(f"error: unknown benchmark(s) {sorted(unknown)}; have: {[m.removeprefix('bench_') for m in modules]}")
        return 1
    records = []
    for name in modules:
        if wanted and name.removeprefix("bench_") not in wanted:
            continue
        for rec in importlib.import_module(f"benchmarks.{name}").run():
            ratio = rec["peer_value"] / rec["ours"] if rec["lower_is_better"] else rec["ours"] / rec["peer_value"]
            rec = {"benchmark": name.removeprefix("bench_"), **rec, "ratio_vs_peer": round(ratio, 3)}
            records.append(rec)
            print(f"{rec['name']:<48} ours {rec['ours']:.4g} {rec['unit']} · {rec['peer']} {rec['peer_value']:.4g} · x{rec['ratio_vs_peer']}")
    if wanted and RESULTS.exists():  # a partial run replaces only its own benchmarks' records
        ran = {r["benchmark"] for r in records}
        records = [r for r in json.loads(RESULTS.read_text())["records"] if r.get("benchmark") not in ran] + records
    out = {"command": "make bench  (python -m benchmarks.run [name ...])", "machine": machine(), "records": records}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
