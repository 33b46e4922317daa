"""A store's datasheet in markdown: objects per category and split, what failed and why, and what each object cost
by step in the run that wrote it (from STORE/runs.jsonl), per category.

    python scripts/datasheet.py data/industrial-cad [--run RUN_ID]     # default: the store's latest run

docs/DATASETS.md's tables come from this. Failures are grouped by their reason with the object ids cut off, so a
hundred parts failing for one reason are one line.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import schema  # noqa: E402

SPLITS = ("train", "val", "test")


def read_runs(store: Path, run_id: str | None) -> list[dict]:
    """The records of one run of STORE/runs.jsonl (the latest when run_id is None)."""
    records = [json.loads(line) for line in (store / "runs.jsonl").read_text().splitlines() if line.strip()]
    run_id = run_id or (records[-1]["run_id"] if records else None)
    return [r for r in records if r["run_id"] == run_id]


def counts_table(store) -> str:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for oid in store.object_ids:
        info = store.info(oid)
        counts[info["category"]][info["split"]] += 1
    lines = ["| category | " + " | ".join(SPLITS) + " | all |", "|---|" + "---|" * (len(SPLITS) + 1)]
    total: collections.Counter = collections.Counter()
    for category in sorted(counts):
        total.update(counts[category])
        lines.append(f"| {category} | " + " | ".join(str(counts[category][s]) for s in SPLITS)
                     + f" | {sum(counts[category].values())} |")
    lines.append("| **all** | " + " | ".join(f"**{total[s]}**" for s in SPLITS) + f" | **{sum(total.values())}** |")
    return "\n".join(lines)


def _reason(error: str) -> str:
    """The reason of a failure without the object's own name (`bd_warehouse:Cls(args): reason` -> `Cls: reason`)."""
    error = re.sub(r"bd_warehouse:(\w+)\([^)]*\)", r"\1", error)
    return re.sub(r"'[^']*'|\d+(\.\d+)?", "…", error)[:160]


def failures_table(records: list[dict]) -> str:
    failed = [r for r in records if r["status"] == "failed"]
    if not failed:
        return "No object failed."
    groups = collections.Counter((r["category"], _reason(r["error"] or "")) for r in failed)
    lines = [f"{len(failed)} objects failed:", "", "| category | objects | reason |", "|---|---|---|"]
    lines += [f"| {c} | {n} | {why} |" for (c, why), n in sorted(groups.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def cost_table(records: list[dict]) -> str:
    """Core-ms per object by step and category (CPU time of the worker process, all its threads)."""
    done = [r for r in records if r["status"] == "ok" and r.get("cpu")]
    if not done:
        return "No object was processed in this run (all skipped?)."
    steps = sorted({s for r in done for s in r["cpu"]}, key=lambda s: -sum(r["cpu"].get(s, 0) for r in done))
    by_category: dict[str, list[dict]] = collections.defaultdict(list)
    for r in done:
        by_category[r["category"]].append(r)
    lines = ["| category | objects | " + " | ".join(steps) + " | all |", "|---|---|" + "---|" * (len(steps) + 1)]
    for category, rows in sorted(by_category.items()) + [("**all**", done)]:
        per_step = [1000 * sum(r["cpu"].get(s, 0) for r in rows) / len(rows) for s in steps]
        lines.append(f"| {category} | {len(rows)} | " + " | ".join(f"{v:.0f}" for v in per_step)
                     + f" | {sum(per_step):.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--run", help="a run id of STORE/runs.jsonl (default: the latest)")
    args = ap.parse_args()
    path = Path(args.store)
    store = schema.open_store(path)
    records = read_runs(path, args.run)
    print(f"## {path.name}: {len(store)} objects\n\n{counts_table(store)}\n")
    print(f"### Failures (run {records[0]['run_id'] if records else '-'})\n\n{failures_table(records)}\n")
    print(f"### Core-ms per object by step (run {records[0]['run_id'] if records else '-'})\n\n"
          f"{cost_table(records)}")


if __name__ == "__main__":
    main()
