"""The promise catalogue: its versions kept (scoring records them) and a one-event preview
judged by the scoring domain, storing nothing."""

from touchpulse_api.promises.routes import router

__all__ = ["router"]
