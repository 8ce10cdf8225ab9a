"""devbox-tui: the Textual face. It only calls devbox.core and renders what it reports.

``run`` is the ``devbox-tui`` command. It turns the cyclic GC off before Textual and the
dashboard are imported: their imports and the first screen's mounting allocate hundreds of
thousands of objects, which the GC walked again and again (~50 ms of a ~0.5 s start). The
app turns it back on after its first paint (``DevboxApp._gc_back_on``).
"""

from __future__ import annotations

import gc

held = False  # the GC is off by ``hold_gc``: the next app turns it back on


def hold_gc() -> None:
    global held
    if gc.isenabled():
        gc.disable()
        held = True


def run() -> None:
    hold_gc()
    from devbox.tui.app import run as run_app

    run_app()
