"""event-promo: the command line, settings and database schema around the campaign engine."""

import os

# Prefect reads these at import: no telemetry (there is no network for it) and no
# CancelledError tracebacks from the temporary server when a command ends.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_SERVER_LEVEL", "CRITICAL")

__version__ = "0.1.0"
