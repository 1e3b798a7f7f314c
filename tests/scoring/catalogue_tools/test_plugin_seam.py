"""The shared CLI's plug-in seam: a broken plug-in is named and skipped, never fatal."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
import typer
from typer.testing import CliRunner

from touchpulse_shared.cli import PLUGIN_GROUP, _add_plugins


def test_plugins_are_added_and_broken_ones_named_and_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parent = typer.Typer()

    @parent.command()
    def alive() -> None:
        typer.echo("still here")

    _add_plugins(
        parent,
        [
            EntryPoint("catalogue", "touchpulse_scoring.catalogue_tools.cli:app", PLUGIN_GROUP),
            EntryPoint("gone", "touchpulse_no_such_module:app", PLUGIN_GROUP),
            EntryPoint("odd", "touchpulse_shared.cli:PLUGIN_GROUP", PLUGIN_GROUP),
        ],
    )
    err = capsys.readouterr().err
    assert "touchpulse: the 'gone' commands cannot load: No module named" in err
    assert "touchpulse: touchpulse_shared.cli:PLUGIN_GROUP is not a typer app; skipped" in err
    runner = CliRunner()
    assert runner.invoke(parent, ["alive"]).stdout == "still here\n"
    listed = runner.invoke(parent, ["catalogue", "--help"])
    assert listed.exit_code == 0
    assert "check" in listed.stdout
    assert "diff" in listed.stdout
    assert runner.invoke(parent, ["gone"]).exit_code == 2
