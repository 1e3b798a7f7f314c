"""``touchpulse-api``: serve the API with uvicorn."""

from __future__ import annotations

from touchpulse_api.app import build_app
from touchpulse_scoring.domain import CatalogueError
from touchpulse_shared.http.serve import serve


def main() -> None:
    serve(
        "touchpulse-api",
        build_app,
        lambda settings: settings.api_port,
        summary="Serve the api for CRM integrations and the action desk: customer health, "
        "gaps, interventions, webhooks.",
        bad_config=(CatalogueError,),
    )


if __name__ == "__main__":
    main()
