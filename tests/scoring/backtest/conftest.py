"""The scoring pipeline fixtures, re-used here by name (a simulator run is scored live,
then back-tested)."""

from tests.scoring.pipeline.conftest import (  # noqa: F401
    pipeline,
    pipeline_settings,
)
