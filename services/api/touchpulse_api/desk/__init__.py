"""The action desk: server-rendered pages for the people who act on customers."""

from fastapi import FastAPI

from touchpulse_api.desk import admin, backtest, routes


def install(app: FastAPI) -> None:
    """The desk's pages (routes.install: its router, static files and error pages) and the
    admin's keys and webhooks pages and the leads' back-test page."""
    routes.install(app)
    app.include_router(admin.router)
    app.include_router(backtest.router)


__all__ = ["install"]
