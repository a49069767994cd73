"""`promo preview`: exactly what one message of a wave will say, before anything is sent.

Renders from the event file (nothing is stored), for a sample contact or a stored one, and
shows what the message costs. For email it prints the subject and the text part and writes
the HTML part (and the `.ics` invitation) to files next to each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from channels.calendar import ics_attachment
from channels.context import LANGUAGES, context, pick_language
from channels.render import TemplateProblem, check_limits, override_folder, render
from channels.samples import UNITS, estimate, sample_context
from channels.sms_segments import encoding
from promo.domain.event import load_event
from promo.domain.names import BROADCAST_CHANNELS, DIRECT_CHANNELS, WAVES
from promo.errors import UserError
from promo.settings import get_settings

CHANNELS = (*DIRECT_CHANNELS, *BROADCAST_CHANNELS)


def preview(
    event_file: Annotated[Path, typer.Argument(help="the event YAML")],
    wave: Annotated[str, typer.Option(help="announce, last_call or reminder")],
    channel: Annotated[str, typer.Option(help="email, sms, voice, vk, telegram, vk_wall, "
                                              "telegram_channel")],
    contact: Annotated[int | None, typer.Option(
        help="render for this stored contact (their name, language and time zone)")] = None,
    lang: Annotated[str | None, typer.Option(help="force the language (ru, en)")] = None,
    out: Annotated[Path, typer.Option(help="where the email's HTML and .ics go")] = Path("preview"),
) -> None:
    """Print one rendered message of a wave, and what it costs; nothing is sent or stored."""
    if wave not in WAVES:
        raise UserError(f"--wave {wave!r}: one of {', '.join(WAVES)}")
    if channel not in CHANNELS:
        raise UserError(f"--channel {channel!r}: one of {', '.join(CHANNELS)}")
    if lang is not None and lang not in LANGUAGES:
        raise UserError(f"--lang {lang!r}: one of {', '.join(LANGUAGES)}")
    settings = get_settings()
    spec = load_event(event_file)
    override = override_folder(spec, event_file)

    if contact is not None:
        if channel in BROADCAST_CHANNELS:
            raise UserError(f"--contact: {channel} is a public post, it goes to no contact")
        from promo.db import session_scope
        from promo.db.models import Contact
        from promo.tokens import unsubscribe_url

        with session_scope(settings.database_url) as s:
            row = s.get(Contact, contact)
            if row is None:
                raise UserError(f"--contact {contact}: no such contact in the store")
            name, language, zone = row.name, row.language, row.timezone
        chosen = lang or pick_language(language, spec, settings.default_language)
        ctx = context(spec, wave, channel, name=name, tz=zone, lang=chosen,
                      unsubscribe_url=unsubscribe_url(settings, contact, channel)
                      if channel == "email" else None, settings=settings)
        who = f"contact {contact}: {name or '(no name)'}, {chosen}, {zone or spec.timezone}"
    else:
        chosen = lang or pick_language(None, spec, settings.default_language)
        ctx = sample_context(spec, wave, channel, chosen, settings)
        who = ("a public post" if channel in BROADCAST_CHANNELS
               else f"a sample contact: {ctx['contact']['name']}, {chosen}, {spec.timezone}")

    rendered = render(spec, wave, channel, chosen, ctx, override, settings=settings, check=False)
    echo = typer.echo
    echo(f"{spec.slug} · {wave} · {channel} · {chosen} · for {who}")
    echo(f"template: {rendered.template}")
    echo("")
    if channel == "email":
        echo(f"Subject: {rendered.subject}")
        echo("")
    echo(rendered.text)
    echo("")
    if channel == "email":
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{spec.slug}.{wave}.{chosen}"
        html_path = out / f"{stem}.html"
        html_path.write_text(rendered.html or "", encoding="utf-8")
        name, _, data = ics_attachment(spec, chosen, ctx["event"]["registration_url"],
                                       ctx["event"]["url"])
        ics_path = out / name
        ics_path.write_bytes(data)
        echo(f"HTML part: {html_path}")
        echo(f"calendar invitation: {ics_path}")
    units, cost = estimate(channel, rendered.text, settings)
    unit = UNITS.get(channel, "message")
    detail = f"{len(rendered.text)} characters"
    if channel == "sms":
        detail += f", {encoding(rendered.text)}"
    echo(f"cost: {units} {unit}{'s' if units != 1 else ''} ({detail}), "
         f"{cost:g} {settings.currency} per message")
    try:
        check_limits(channel, chosen, rendered, ctx, settings)
    except TemplateProblem as exc:
        raise UserError(f"this message would not be sent: {exc}") from None
