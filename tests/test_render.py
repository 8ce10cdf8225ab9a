"""The headless renderers: the spinner animates, long lines are cut, progress is throttled."""

from __future__ import annotations

import io
import time

from devbox.core.events import LogLine, Progress, Step, Subject
from devbox.render import LONGEST, PlainRenderer, RichRenderer


def test_rich_spinner_animates_across_refreshes() -> None:
    from rich.console import Console

    r = RichRenderer()
    r(Step(subject=Subject("image"), state="start", detail="building"))
    r.close()
    frames = []
    for _ in range(4):
        out = io.StringIO()
        Console(file=out, force_terminal=True, width=60, color_system=None).print(r._renderable())
        frames.append(out.getvalue().split()[0])
        time.sleep(0.09)  # "dots" turns every 80 ms
    assert len(set(frames)) > 1, frames  # a fresh Spinner per refresh always showed its first frame


def test_plain_renderer_cuts_huge_lines_and_throttles_progress() -> None:
    out, err = io.StringIO(), io.StringIO()
    r = PlainRenderer(out, err)
    r(LogLine(text="y" * 1_000_000))
    for i in range(100):
        r(Progress(text=f"{i}%", done=i, total=100))
    lines = out.getvalue().splitlines()
    assert len(lines[0]) < LONGEST + 100 and "more characters" in lines[0]
    assert len(lines) == 2  # one progress line, not a hundred
