"""devbox-tui entry point (the dashboard arrives with the TUI issue)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static


def styles_path() -> Path:
    """styles/devbox.tcss from the wheel (devbox/styles) or from the source checkout."""
    packaged = Path(str(resources.files("devbox"))) / "styles" / "devbox.tcss"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[3] / "styles" / "devbox.tcss"


class DevboxApp(App[None]):
    TITLE = "devbox"
    BINDINGS: ClassVar = [("q", "quit", "Quit")]

    def __init__(self) -> None:
        super().__init__(css_path=styles_path())

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("The dashboard is coming. Meanwhile: ./start-work BRANCH, devbox status.", id="placeholder")
        yield Footer()


def run() -> None:
    DevboxApp().run()
