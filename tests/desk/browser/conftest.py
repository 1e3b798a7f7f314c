"""The desk in a real browser: Debian's chromium, driven by Playwright, on the real pipeline.

The pipeline is tests/api/endpoints' ``world`` (ingest, scoring and the api in this
process, on the session's Kafka and PostgreSQL); here the api is also served over real
HTTP on 127.0.0.1 so that chromium can load the desk, sign in with cookies, and keep a
server-sent-events stream open. People are created with the same function the
``touchpulse users create`` command calls.

chromium comes from ``make setup`` (``touchpulse stack fetch``): a machine without it fails
these tests with that message rather than skipping them.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Dialog, Page, async_playwright, expect

from tests.api.endpoints.conftest import World, world  # noqa: F401 - the fixture, by name
from tests.scoring.pipeline.conftest import pipeline_settings  # noqa: F401 - used by world
from touchpulse_shared.people import Role, create_person
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.browser import axe_script, find_chromium
from touchpulse_shared.stack.procs import free_port

# Wall-clock bounds on a loaded 2-core machine, not expectations.
READY_S = 30.0
#: Playwright's own wait for an element or a navigation (its default is 30 s as well).
ACTION_MS = 30_000

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

#: Where every run writes its screenshots (make desk-screenshots copies them to docs/desk/).
SCREENSHOTS = Path(".touchpulse") / "desk-screenshots"

PASSWORD = "correct horse battery staple"  # noqa: S105 - test accounts only
PEOPLE = {
    "agent": ("agnes@example.test", "Agnes Agent", Role.AGENT),
    "agent2": ("oskar@example.test", "Oskar Other", Role.AGENT),
    "lead": ("lena@example.test", "Lena Lead", Role.LEAD),
    "admin": ("ada@example.test", "Ada Admin", Role.ADMIN),
}


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    found = find_chromium()
    if found is None:
        pytest.fail(
            "Debian's chromium is not installed: `make setup` (touchpulse stack fetch) installs"
            " it with apt-get; the desk's browser tests need it and are never skipped"
        )
    return found


@pytest.fixture(scope="session")
def axe_source(base_settings: Settings) -> str:
    """axe-core's script, cached by make setup (fetched here on first use otherwise)."""
    return axe_script(base_settings.cache_dir).read_text()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Emptied once per session, so the folder holds exactly this run's pictures."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    # expect() retries until the page gets there; its own default (5 s) is short for a
    # live update on a loaded 2-core machine (scoring, the feed's poll, the fragment).
    expect.set_options(timeout=ACTION_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium_path),
            # Root without a display: no sandbox (it needs an unprivileged user), headless.
            args=["--no-sandbox", "--headless=new", "--disable-dev-shm-usage"],
            timeout=ACTION_MS,
        )
        try:
            yield launched
        finally:
            # Closing the browser ends chromium and every child process it started.
            await launched.close()


@dataclass
class Watched:
    """A page and what it did that a test must see: dialogs opened, errors thrown."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Desk:
    world: World
    url: str
    browser: Browser
    axe: str
    screenshots: Path
    logins: dict[str, str]
    _contexts: list[BrowserContext] = field(default_factory=list)

    async def open(self, *, viewport: dict[str, int] = DESKTOP) -> Watched:
        """A fresh browser context (its own cookies) and page, with dialogs and page errors
        recorded (a dialog is dismissed so that nothing blocks)."""
        context = await self.browser.new_context(
            viewport={"width": viewport["width"], "height": viewport["height"]},
            base_url=self.url,
            is_mobile=viewport == PHONE,
            has_touch=viewport == PHONE,
        )
        context.set_default_timeout(ACTION_MS)
        self._contexts.append(context)
        page = await context.new_page()
        watched = Watched(page)

        async def on_dialog(dialog: Dialog) -> None:
            watched.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: watched.errors.append(str(error)))
        return watched

    async def sign_in(self, who: str, *, viewport: dict[str, int] = DESKTOP) -> Watched:
        watched = await self.open(viewport=viewport)
        page = watched.page
        await page.goto("/desk/sign-in")
        await page.get_by_label("Login").fill(self.logins[who])
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{self.url}/desk")
        return watched

    async def close(self) -> None:
        for context in self._contexts:
            await context.close()

    async def check_accessibility(self, page: Page) -> None:
        """No serious or critical axe-core violation in the page as it stands."""
        bad = await serious_violations(page, self.axe)
        assert not bad, f"{page.url}: {bad}"

    async def screenshot(self, page: Page, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


async def serious_violations(page: Page, axe: str) -> list[dict[str, Any]]:
    """axe-core's rules run in ``page``: its serious and critical violations.

    Evaluated through the DevTools protocol, which the page's Content-Security-Policy does
    not govern (a ``<script>`` tag with the rules inline would be refused by it).
    """
    await page.evaluate(f"() => {{ {axe}\n }}")
    violations: list[dict[str, Any]] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")),
            }));
        }"""
    )
    return [v for v in violations if v["impact"] in ("serious", "critical")]


async def _serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        # The world fixture has entered the app's lifespan already.
        lifespan="off",
        ws="none",
        # An open event stream would hold the shutdown; the browser is closed first anyway.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(READY_S):
        # uvicorn offers only a flag to look at.
        while not server.started:
            if task.done():
                await task  # raises what stopped it
            await asyncio.sleep(0.02)
    return server, task


async def _people(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        for login, name, role in PEOPLE.values():
            await create_person(
                conn,
                login=login,
                display_name=name,
                role=role,
                password=PASSWORD,
                now=datetime.now(UTC),
            )
    finally:
        await conn.close()
    return {who: login for who, (login, _, _) in PEOPLE.items()}


@pytest.fixture
async def desk(
    world: World,  # noqa: F811 - the imported fixture
    browser: Browser,
    axe_source: str,
    screenshots: Path,
) -> AsyncIterator[Desk]:
    port = free_port()
    server, task = await _serve(world.app, port)
    try:
        logins = await _people(world.pipeline.database_url)
        served = Desk(
            world=world,
            url=f"http://127.0.0.1:{port}",
            browser=browser,
            axe=axe_source,
            screenshots=screenshots,
            logins=logins,
        )
        try:
            yield served
        finally:
            await served.close()
    finally:
        server.should_exit = True
        await task
