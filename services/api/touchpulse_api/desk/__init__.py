"""The action desk: server-rendered pages for the people who act on customers."""

from touchpulse_api.desk.routes import install

__all__ = ["install"]
