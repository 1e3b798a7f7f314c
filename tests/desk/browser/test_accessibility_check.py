"""The accessibility check the desk's pages pass is one that fails: axe-core, run in chromium
through the same function, finds the violations a page plainly has, under a CSP as strict
as the desk's."""

from __future__ import annotations

from playwright.async_api import Browser

from tests.desk.browser.conftest import serious_violations

CSP = "default-src 'none'; script-src 'self'; style-src 'self'"
BROKEN = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>broken</title></head>
<body><main><h1>Broken</h1><img src="data:,"><form><input type="text" name="q"></form>
</main></body></html>"""
FIXED = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>fixed</title></head>
<body><main><h1>Fixed</h1><img src="data:," alt="nothing"><form>
<label for="q">Search</label><input id="q" type="text" name="q"></form></main></body></html>"""


async def test_axe_reports_a_missing_alt_and_label_and_passes_the_page_without_them(
    browser: Browser, axe_source: str
) -> None:
    page = await browser.new_page()
    try:
        await page.set_content(BROKEN)
        found = {v["id"] for v in await serious_violations(page, axe_source)}
        assert {"image-alt", "label"} <= found, found
        await page.set_content(FIXED)
        assert await serious_violations(page, axe_source) == []
    finally:
        await page.close()
