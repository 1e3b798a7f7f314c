"""`touchpulse users …` as an operator runs it (a real process, the password on stdin), and
the demo people `make run` creates, each checked by signing in at the desk."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.desk.conftest import Desk, sign_in
from touchpulse_shared.stack.runner import _demo_people


async def users(desk: Desk, *args: str, stdin: str = "") -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "TOUCHPULSE_CONFIG_FILE"}
    env["TOUCHPULSE_DATABASE_URL"] = desk.url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "touchpulse_shared.cli",
        "users",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_create_list_disable_reset(desk: Desk) -> None:
    first, second = "first password 1234", "second password 5678"
    code, output = await users(
        desk,
        "create",
        "Ana@Example.com",
        "--name",
        "Ana",
        "--role",
        "lead",
        "--password-stdin",
        stdin=first + "\n",
    )
    assert code == 0, output
    assert "ana@example.com  'Ana'  role=lead  active" in output
    assert first not in output
    assert (await sign_in(desk.client(), "ana@example.com", first)).status_code == 303

    code, output = await users(
        desk, "create", "x@example.com", "--name", "X", "--password-stdin", stdin="short\n"
    )
    assert code == 1
    assert "12 characters" in output

    code, output = await users(
        desk, "reset-password", "ana@example.com", "--password-stdin", stdin=second + "\n"
    )
    assert code == 0, output
    assert second not in output
    assert (await sign_in(desk.client(), "ana@example.com", first)).status_code == 401
    assert (await sign_in(desk.client(), "ana@example.com", second)).status_code == 303

    code, output = await users(desk, "disable", "ana@example.com")
    assert code == 0
    assert "role=lead  disabled" in output
    assert (await sign_in(desk.client(), "ana@example.com", second)).status_code == 401
    code, output = await users(desk, "list")
    assert "ana@example.com" in output
    assert "disabled" in output
    assert "$argon2" not in output
    code, output = await users(desk, "disable", "nobody@example.com")
    assert code == 1


async def test_make_runs_demo_people_sign_in_and_are_renewed(desk: Desk) -> None:
    first = await _demo_people(desk.url)
    assert [(login, role.value) for login, role, _ in first] == [
        ("agent@demo.touchpulse", "agent"),
        ("lead@demo.touchpulse", "lead"),
    ]
    # A second run on the same state gets new passwords; the old ones stop working.
    second = await _demo_people(desk.url)
    for (login, _, old), (_, _, new) in zip(first, second, strict=True):
        assert old != new
        assert (await sign_in(desk.client(), login, old)).status_code == 401
        assert (await sign_in(desk.client(), login, new)).status_code == 303
