"""Pages: the Jinja2 environment (autoescape on for every template), the security headers
every desk response carries, and the trend chart drawn as SVG on the server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# Scripts and styles from the desk's own static files only: no inline script or style, so
# text injected into a page (a hostile note or customer id that escaping somehow let
# through) cannot run. Inline SVG is markup, drawn with presentation attributes.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # Pages hold customer data and a CSRF token: never kept by a shared cache or the
    # browser's back-forward history after sign-out.
    "Cache-Control": "no-store",
}

_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    # Every .html template escapes whatever it prints: ids, notes and attributes are
    # hostile input.
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


_ENV.filters["when"] = _when
_ENV.filters["num"] = _num


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def page(template: str, context: Mapping[str, Any], *, status: int = 200) -> HTMLResponse:
    html = _ENV.get_template(template).render(**context)
    response = HTMLResponse(html, status_code=status)
    secure(response)
    return response


@dataclass(frozen=True, slots=True)
class Chart:
    """A trend line in a fixed view box: what the template draws."""

    width: int
    height: int
    path: str
    points: list[tuple[float, float, str]]  # x, y, a title (time and score)
    threshold_y: float | None
    first: str
    last: str


def trend_chart(
    trend: Sequence[tuple[datetime, float | None]],
    *,
    threshold: float | None,
    width: int = 600,
    height: int = 160,
) -> Chart | None:
    """The health history as an SVG path (score 0-100 upwards, time left to right); None
    with fewer than two scored points (nothing to draw a line through)."""
    scored = [(at, s) for at, s in trend if s is not None]
    if len(scored) < 2:
        return None
    pad = 8.0
    t0 = scored[0][0].timestamp()
    span = max(scored[-1][0].timestamp() - t0, 1.0)

    def x(at: datetime) -> float:
        return round(pad + (at.timestamp() - t0) / span * (width - 2 * pad), 1)

    def y(score: float) -> float:
        return round(pad + (100 - score) / 100 * (height - 2 * pad), 1)

    points = [(x(at), y(s), f"{_when(at)}: {s:.1f}") for at, s in scored]
    path = " ".join(f"{'M' if i == 0 else 'L'}{px},{py}" for i, (px, py, _) in enumerate(points))
    return Chart(
        width=width,
        height=height,
        path=path,
        points=points,
        threshold_y=None if threshold is None else y(threshold),
        first=_when(scored[0][0]),
        last=_when(scored[-1][0]),
    )
