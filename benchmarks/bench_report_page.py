"""What report.html weighs and how long it takes to open, on a real eval of many objects.

    python -m benchmarks.bench_report_page --checkpoint RUN --data STORE --limit 100 --out /tmp/page-bench

Runs `aps eval` (unless OUT already holds its report.html; --no-eval reuses it), then opens the page in Debian's
chromium, headless, three times from a cold page: the seconds to the first drawn 3D view, and the seconds a row
click takes to show another object (mean over 10 rows). Prints the page's size, per object and in total.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def open_times(page_path: Path, repeats: int = 3, switches: int = 10) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    opens, switch = [], []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=shutil.which("chromium"))
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            started = time.perf_counter()
            page.goto(page_path.resolve().as_uri())
            page.wait_for_function("window.apsViewer && window.apsViewer.frames > 0", timeout=120_000)
            opens.append(time.perf_counter() - started)
            rows = page.locator("#table tbody tr")
            for i in range(1, min(switches, rows.count() - 1) + 1):
                frames = page.evaluate("window.apsViewer.frames")
                started = time.perf_counter()
                rows.nth(i).click()
                page.wait_for_function(f"window.apsViewer.frames > {frames}")
                switch.append(time.perf_counter() - started)
            errors = page.evaluate("window.apsViewer.error")
            if errors:
                raise RuntimeError(f"{page_path}: the page reports {errors}")
            page.close()
        browser.close()
    return {"open_s": statistics.median(opens), "open_s_max": max(opens),
            "switch_s": statistics.mean(switch) if switch else float("nan")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--split", default="test")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--page-faces", type=int, default=3000)
    parser.add_argument("--no-eval", action="store_true", help="reuse OUT/report.html")
    args = parser.parse_args(argv)
    page = args.out / "report.html"
    if not args.no_eval:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aps.cli", "eval", "--checkpoint", str(args.checkpoint), "--data",
                        str(args.data), "--out", str(args.out), "--split", args.split, "--limit", str(args.limit),
                        "--resolution", str(args.resolution), "--page-faces", str(args.page_faces)], check=True)
        print(f"eval: {time.perf_counter() - started:.0f} s")
    objects = sum(1 for _ in (args.out / "page").glob("*.json"))
    timings = [json.loads(p.read_text())["timings"] for p in (args.out / "objects").glob("*.json")]
    page_share = sum(t.get("page", 0) for t in timings) / max(sum(sum(t.values()) for t in timings), 1e-9)
    size = page.stat().st_size
    figures = open_times(page)
    print(f"report.html: {objects} objects with a 3D view, {size / 1e6:.1f} MB ({size / max(objects, 1) / 1e3:.0f} KB "
          f"per object), meshes at <= {args.page_faces} faces; the page step is {100 * page_share:.1f}% of the "
          f"eval's per-object seconds")
    print(f"chromium (headless, software WebGL): opens to its first 3D view in {figures['open_s']:.2f} s (median "
          f"of 3, max {figures['open_s_max']:.2f} s); a row click shows another object in {figures['switch_s']:.3f} s")


if __name__ == "__main__":
    main()
