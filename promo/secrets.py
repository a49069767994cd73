"""Credentials as set, or read from the Prefect Secret block they name."""

from __future__ import annotations

import threading
import time

from pydantic import SecretStr

from promo.errors import ConfigurationError

# a credential set to `prefect-secret:<block name>` is read from that Prefect Secret block
PREFECT_SECRET = "prefect-secret:"
_SECRET_TTL = 300.0  # seconds a block's value is reused (a rotated secret is picked up after)
_secrets: dict[str, tuple[float, str]] = {}
_secrets_lock = threading.Lock()


def reveal(value: SecretStr | str | None) -> str | None:
    """A credential's value: as set, or from the Prefect Secret block it names."""
    if value is None:
        return None
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not raw.startswith(PREFECT_SECRET):
        return raw or None
    block = raw[len(PREFECT_SECRET):].strip()
    with _secrets_lock:
        cached = _secrets.get(block)
        if cached and time.monotonic() - cached[0] < _SECRET_TTL:
            return cached[1]
    from prefect.blocks.system import Secret

    try:
        secret = str(Secret.load(block).get())
    except ValueError as exc:  # no such block
        raise ConfigurationError(f"Prefect Secret block {block!r}: {exc}") from None
    with _secrets_lock:
        _secrets[block] = (time.monotonic(), secret)
    return secret
