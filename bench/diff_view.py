"""The Diff tab's patch view with a 20,000-line patch: the UI-thread work of one scroll
frame (every visible line highlighted and drawn, nothing cached) at random positions,
against the same frame of a 100-line patch measured in the same run.

Run: .venv/bin/python bench/diff_view.py [--lines N] [--frames F]
Target: the worst frame under 50 ms (the dashboard's stall budget).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from textual.app import App, ComposeResult

from devbox.tui.diffview import PatchView

HEIGHT = 45


def patch(lines: int) -> str:
    out = ["diff --git a/f.py b/f.py", "index 1111111..2222222 100644", "--- a/f.py", "+++ b/f.py"]
    for i in range(lines):
        if i % 40 == 0:
            out.append(f"@@ -{i},40 +{i},40 @@ def function_{i}():")
        out.append(("+" if i % 3 else "-") + f"    value_{i} = compute({i}, 'text with\ttabs and ünïcödé') # note")
    return "\n".join(out)


class One(App[None]):
    def compose(self) -> ComposeResult:
        yield PatchView()


async def frames(lines: int, count: int) -> list[float]:
    app = One()
    out: list[float] = []
    async with app.run_test(size=(160, HEIGHT)) as pilot:
        view = app.query_one(PatchView)
        view.show(patch(lines))
        await pilot.pause()
        rng = random.Random(1)
        for _ in range(count):
            y = rng.randrange(max(1, len(view.lines) - HEIGHT))
            view._cache.clear()  # a cold frame: every line highlighted anew
            view.scroll_to(0, y, animate=False, immediate=True)
            t0 = time.perf_counter()
            for row in range(view.size.height):
                view.render_line(row)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--frames", type=int, default=200)
    args = ap.parse_args()
    base = asyncio.run(frames(100, args.frames))
    big = asyncio.run(frames(args.lines, args.frames))
    b, m, worst = statistics.median(base), statistics.median(big), max(big)
    print(f"frames: {args.frames} ({HEIGHT} lines each, cold cache, random positions)")
    print(f"baseline: a frame of a 100-line patch, median:   {b:6.2f} ms")
    print(f"a frame of a {args.lines:,}-line patch, median:       {m:6.2f} ms")
    print(f"ratio median / baseline:                          {m / b:6.2f}")
    print(f"worst frame:                                      {worst:6.2f} ms   target < 50 ms: "
          f"{'OK' if worst < 50 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
