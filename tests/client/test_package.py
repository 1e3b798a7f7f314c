"""touchpulse-client is a distribution of its own: it builds into a wheel that needs httpx
and nothing else, and works in a virtualenv that holds only it and httpx's own needs."""

from __future__ import annotations

import email
import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"


def _closure(name: str) -> set[str]:
    """The distributions ``name`` needs here, itself included (extras and markers that do
    not apply left out)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        for text in importlib.metadata.requires(dist) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _top_level(dist: str) -> set[str]:
    names = set()
    for file in importlib.metadata.files(dist) or []:
        head = file.parts[0]
        if not head.endswith((".dist-info", ".pth")) and head != "..":
            names.add(head)
    return names


def _run(*argv: str | Path) -> str:
    result = subprocess.run(  # noqa: S603 - fixed commands of this test
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_wheel_needs_only_httpx_and_works_alone(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        CLIENT,
        "-w",
        wheels,
    )
    (wheel,) = wheels.glob("touchpulse_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert metadata["Name"] == "touchpulse-client"
    assert metadata.get_all("Requires-Dist") == ["httpx>=0.27"]
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"touchpulse_client"}
    assert "touchpulse_client/py.typed" in names

    # A fresh virtualenv with the wheel, and httpx's own needs beside it: nothing of
    # Touchpulse's services, pydantic or the lock.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        wheel,
    )
    deps = tmp_path / "deps"
    deps.mkdir()
    site = Path(str(importlib.metadata.distribution("httpx").locate_file("")))
    for dist in _closure("httpx"):
        for name in _top_level(dist):
            (deps / name).symlink_to(site / name)
    (site_packages,) = venv.glob("lib/python*/site-packages")
    (site_packages / "httpx-closure.pth").write_text(f"{deps}\n")
    out = _run(
        python,
        "-I",
        "-c",
        "import importlib.metadata, importlib.util, sys\n"
        "import touchpulse_client as tc\n"
        "builder = tc.EventBuilder('s', touchpoint='web')\n"
        "event = builder.event(customer_id='C', type='page.viewed')\n"
        "assert event.to_dict()['event_id'] == event.event_id\n"
        "for absent in ('pydantic', 'touchpulse_shared', 'touchpulse_ingest', 'orjson'):\n"
        "    assert importlib.util.find_spec(absent) is None, absent\n"
        "print(importlib.metadata.version('touchpulse-client'), tc.__file__)\n",
    )
    version, location = out.split()
    assert version == "0.1.0"
    assert location.startswith(str(site_packages))
