"""make run's live view: redrawn in place on a terminal, block after block anywhere else."""

from __future__ import annotations

import io

from rich.console import Console

from touchpulse_shared.stack.live import LiveDisplay, Snapshot, render


def test_on_a_terminal_each_view_replaces_the_last() -> None:
    screen = io.StringIO()
    echoed: list[str] = []
    display = LiveDisplay(echoed.append, Console(file=screen, force_terminal=True, width=100))
    first = render(None, Snapshot(at=1.0))
    second = render(Snapshot(at=1.0), Snapshot(at=6.0, accepted=50.0, scored=50.0))
    display.show(first)
    drawn = screen.tell()
    display.show(second)
    display.close()
    redraw = screen.getvalue()[drawn:]
    assert not echoed  # nothing scrolled through echo
    # The second view moves the cursor back up over each line of the first, erasing it,
    # and draws itself there.
    erase_first = "\r\x1b[2K" + "\x1b[1A\x1b[2K" * first.count("\n")
    assert redraw.startswith(erase_first + second.splitlines()[0]), repr(redraw[:120])
    assert "events/s      10.0 accepted" in redraw


def test_elsewhere_every_view_is_kept_in_order() -> None:
    screen = io.StringIO()
    echoed: list[str] = []
    display = LiveDisplay(echoed.append, Console(file=screen, force_terminal=False))
    views = [render(None, Snapshot(at=1.0)), render(Snapshot(at=1.0), Snapshot(at=6.0))]
    for view in views:
        display.show(view)
    display.close()
    assert echoed == views
    assert screen.getvalue() == ""
