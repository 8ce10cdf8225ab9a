"""Waiting inside a running app (Textual's pilot) for what a user would wait for.

One copy for every dashboard test. `showing` is the condition to wait on for a screen:
`app.screen` is the new screen as soon as it is pushed, before its widgets are composed and
mounted, so a test that queries it on `isinstance` alone races the compose (a CI run failed
that way on a dialog's title)."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import App
from textual.screen import Screen


async def until(pilot: object, cond: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting in the app"
        await pilot.pause(0.05)  # type: ignore[attr-defined]


def showing(app: App[object], screen: type[Screen[object]]) -> bool:
    """The app's top screen is of this kind and has mounted (composed) its widgets."""
    return isinstance(app.screen, screen) and app.screen.is_mounted
