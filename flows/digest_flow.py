"""The monthly digest as a Prefect flow: `digest/monthly` in prefect.yaml runs it on a cron
schedule, `promo digest run` by hand.

The steps are `flows.digest`'s; the sending is the wave flow's own (`flows.campaign.wave_flow`
run as a subflow on the digest's events row): the same decide step, batches, pacing,
idempotency, crash-safety and artifacts as any wave.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.states import Failed
from sqlalchemy import select

from channels.samples import sample_check
from flows.artifacts import publish_nothing_sent
from flows.campaign import parse_now, run_wave
from flows.digest import compose, override_of, save_digest
from promo.db import session_scope
from promo.db.models import Event
from promo.domain.names import DIGEST
from promo.errors import UserError
from promo.settings import get_settings


def _digest_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    return f"digest · {params.get('series') or 'every series'} · {parse_now(params.get('now')):%Y-%m}"


def all_series() -> list[str]:
    settings = get_settings()
    with session_scope(settings.database_url) as s:
        return sorted(x for x in s.scalars(
            select(Event.series).where(Event.kind == "event").distinct()) if x)


@flow(name="digest", flow_run_name=_digest_run_name)
def digest_flow(series: str | None = None, now: str | None = None) -> dict[str, Any]:
    """The series' digest of this month (`series` None: every series in the store): the
    upcoming events and the past month's recordings, to the series' audience, once a month.
    A month with nothing to say sends nothing and says so."""
    clock = parse_now(now)
    if series:
        return _one(series, clock.isoformat())
    results = []
    for name in all_series():
        try:
            results.append(_one(name, clock.isoformat()))
        except UserError as exc:  # one series' broken template must not stop the others'
            get_run_logger().error("%s: %s", name, exc)
            results.append({"series": name, "digest": None, "failed": str(exc), "sent": {}})
    failed = [f"{r['series']}: {r['failed']}" for r in results if r.get("failed")]
    if failed:
        return Failed(message="; ".join(failed))
    return {"digests": results}


def _one(series: str, clock: str) -> dict[str, Any]:
    logger = get_run_logger()
    settings = get_settings()
    with session_scope(settings.database_url) as s:
        spec, note = compose(s, series, parse_now(clock), settings)
        if spec is not None:
            # every template checked before anything is stored or sent
            sample_check(spec, {DIGEST: list(settings.digest_channels)}, override_of(s, spec),
                         settings=settings)
            save_digest(s, spec)
    logger.info("%s", note)
    if spec is None:
        publish_nothing_sent(f"digest-{series}", DIGEST, note)
        return {"series": series, "digest": None, "note": note, "sent": {}}
    with tags(f"series:{series}", "wave:digest"):
        result = run_wave(spec.slug, DIGEST, clock)
    # the wave's own result, with what the digest says in place of the wave's note
    return {**result, "series": series, "digest": spec.slug, "note": note}
