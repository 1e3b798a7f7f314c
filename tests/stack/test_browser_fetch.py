"""axe-core is kept only when npm's tarball hashes to the pinned integrity.

A stand-in ``npm`` on the PATH packs a tarball of other bytes: the fetch refuses it, names
both integrities and leaves nothing in the cache (so the next setup fetches again).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from touchpulse_shared.stack.browser import AXE_INTEGRITY, AXE_VERSION, axe_script
from touchpulse_shared.stack.procs import StackError

FAKE_NPM = """#!/bin/sh
# npm pack axe-core@VERSION --pack-destination DIR
exec python3 - "$4" "$2" <<'PY'
import io, sys, tarfile
dest, spec = sys.argv[1], sys.argv[2]
body = b"window.axe = {run: () => ({violations: []})};"
with tarfile.open(f"{dest}/axe-core-{spec.split('@')[1]}.tgz", "w:gz") as tar:
    info = tarfile.TarInfo("package/axe.min.js")
    info.size = len(body)
    tar.addfile(info, io.BytesIO(body))
PY
"""


def test_a_tarball_that_does_not_match_the_pinned_integrity_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    cache = tmp_path / "cache"

    with pytest.raises(StackError, match="integrity") as refused:
        axe_script(cache)
    assert AXE_INTEGRITY in str(refused.value)
    assert not (cache / "axe-core" / AXE_VERSION).exists()
    # The stand-in did pack a tarball: the refusal is the hash's, not a failed pack.
    assert "sha512-" in str(refused.value).replace(AXE_INTEGRITY, "")
