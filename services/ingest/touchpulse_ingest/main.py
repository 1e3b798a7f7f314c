"""``touchpulse-ingest``: serve the ingest API with uvicorn."""

from __future__ import annotations

from touchpulse_ingest.app import build_app
from touchpulse_scoring.domain.errors import CatalogueError
from touchpulse_shared.http.serve import serve


def main() -> None:
    serve(
        "touchpulse-ingest",
        build_app,
        lambda settings: settings.ingest_port,
        summary="Serve the ingest API: customer-experience events from every touchpoint, "
        "into Kafka.",
        bad_config=(CatalogueError,),
    )


if __name__ == "__main__":
    main()
