"""The desk's test browser: Debian's ``chromium``, and axe-core from the npm registry.

Playwright drives the browser (tests/desk/browser), but its own browser download reaches a
host this project may not use, so it is pointed at the system ``chromium`` instead: the
Debian package, installed with ``apt-get`` when it is missing (as root; one
``apt-get update`` first, as a fresh machine has no package lists). ``npm``, which fetches
axe-core, is installed the same way when it is missing. A browser is a tree
of shared libraries and data files, not one static binary like promtool, so it is
installed rather than unpacked into ``.cache/``.

axe-core (the accessibility rules the tests run in every desk page) is one JavaScript file.
``npm pack`` fetches the pinned version's tarball into a staging folder; its SHA-512 must
equal the registry integrity pinned here before ``axe.min.js`` is kept, cached per version
in the git-ignored cache like the Kafka jars.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from touchpulse_shared.stack.procs import COMPLETE_MARKER, StackError, fetch_once

#: The Debian package of the browser; its version is whatever the release's security
#: updates hold (Chromium is only supported at its newest build).
CHROMIUM_PACKAGE = "chromium"
#: Where Debian's package puts the browser's launcher.
CHROMIUM_NAMES = ("chromium", "chromium-browser")

#: axe-core's version and its ``dist.integrity`` in the npm registry (``npm view
#: axe-core@VERSION dist.integrity``). A tarball that does not hash to it is refused.
AXE_VERSION = "4.14.1"
AXE_INTEGRITY = (
    "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37"
    "OgudVGtQ=="
)
_AXE_FILE = "axe.min.js"

# apt-get install of chromium pulls about 100 MB of packages; a slow mirror takes minutes.
_APT_TIMEOUT_S = 900.0
_NPM_TIMEOUT_S = 300.0


def find_chromium() -> Path | None:
    """The system browser's launcher, or None when it is not installed."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return None


def ensure_chromium() -> Path:
    """Debian's ``chromium``, installed with ``apt-get`` when it is missing."""
    found = find_chromium()
    if found is None:
        _apt_install(CHROMIUM_PACKAGE)
        found = find_chromium()
    if found is None:
        raise StackError(f"apt-get installed {CHROMIUM_PACKAGE} but no launcher is on PATH")
    return found


def _apt_install(package: str) -> None:
    if shutil.which("apt-get") is None:
        raise StackError(f"{package} is missing and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise StackError(
            f"{package} is missing; installing it needs root (sudo apt-get install {package})"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # A fresh machine (CI, a container) has no package lists: update first.
    update = _run(["apt-get", "update"], env=env, timeout=_APT_TIMEOUT_S)
    if update.returncode != 0:
        raise StackError(f"apt-get update failed:\n{_output(update)}")
    install = _run(
        ["apt-get", "install", "-y", "--no-install-recommends", package],
        env=env,
        timeout=_APT_TIMEOUT_S,
    )
    if install.returncode != 0:
        raise StackError(f"apt-get install {package} failed:\n{_output(install)}")


def axe_script(cache_dir: Path, version: str = AXE_VERSION) -> Path:
    """``axe.min.js`` of axe-core ``version``, fetched from the npm registry on first use."""
    folder = cache_dir.resolve() / "axe-core" / version
    fetch_once(folder, lambda: _fetch_axe(folder, version))
    return folder / _AXE_FILE


def _fetch_axe(folder: Path, version: str) -> None:
    if version != AXE_VERSION:
        # The integrity is pinned for one version only.
        raise StackError(f"axe-core {version}: only {AXE_VERSION} has a pinned integrity")
    if shutil.which("npm") is None:
        # npm is the registry's own client; Debian packages it.
        _apt_install("npm")
    if shutil.which("npm") is None:
        raise StackError("apt-get installed npm but there is no npm on PATH")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=folder.parent))
    try:
        packed = _run(
            ["npm", "pack", f"axe-core@{version}", "--pack-destination", str(staging)],
            cwd=staging,
            timeout=_NPM_TIMEOUT_S,
        )
        if packed.returncode != 0:
            raise StackError(f"npm pack axe-core@{version} failed:\n{_output(packed)}")
        tarballs = sorted(staging.glob("axe-core-*.tgz"))
        if len(tarballs) != 1:
            raise StackError(f"npm pack left {[t.name for t in tarballs]} in {staging}")
        digest = hashlib.sha512(tarballs[0].read_bytes()).digest()
        got = "sha512-" + base64.b64encode(digest).decode()
        if got != AXE_INTEGRITY:
            raise StackError(f"axe-core@{version}: integrity {got}, expected {AXE_INTEGRITY}")
        out = staging / "out"
        out.mkdir()
        with tarfile.open(tarballs[0]) as archive:
            member = archive.extractfile(f"package/{_AXE_FILE}")
            if member is None:
                raise StackError(f"{tarballs[0].name} holds no package/{_AXE_FILE}")
            (out / _AXE_FILE).write_bytes(member.read())
        (out / COMPLETE_MARKER).write_text(version)
        if folder.exists():
            shutil.rmtree(folder)
        out.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run(
    cmd: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr)[-3000:]
