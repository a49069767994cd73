"""Rendering messages from the Jinja2 templates under `templates/`.

Sandboxed, undefined variables are errors, HTML is autoescaped. A template is looked up
as `<wave>/<channel>.<lang>.<part>.j2` (part: subject, html, txt) first in the event's
own template folder, then in the defaults; channels without a template of their own use
`<wave>/message.<lang>.txt.j2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from flows.events import EventSpec
from promo.errors import UserError

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LANGUAGES = ("ru", "en")
PARTS = {"email": ("subject", "html", "txt")}
# the UTM medium names the kind of wave: promotion or reminder
WAVE_MEDIUM = {"announce": "announce", "last_call": "last_call", "reminder": "reminder"}


class TemplateProblem(UserError):
    """A template that fails to render: names the file, the line and what is wrong."""


@dataclass
class Rendered:
    text: str
    subject: str | None = None
    html: str | None = None


def with_utm(url: str, *, source: str, medium: str, campaign: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("utm_")]
    query += [("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@lru_cache(maxsize=32)
def environment(override: str | None = None) -> SandboxedEnvironment:
    loaders = [FileSystemLoader(str(DEFAULT_TEMPLATES))]
    if override:
        loaders.insert(0, FileSystemLoader(override))
    env = SandboxedEnvironment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    return env


def template_names(wave: str, channel: str, lang: str, part: str) -> list[str]:
    names = [f"{wave}/{channel}.{lang}.{part}.j2"]
    if channel not in PARTS:
        names.append(f"{wave}/message.{lang}.txt.j2")
    return names


def pick_language(contact_language: str | None, event: EventSpec) -> str:
    for lang in (contact_language, event.language):
        if lang in LANGUAGES:
            return lang
    return LANGUAGES[0]


def context(event: EventSpec, wave: str, channel: str, *, name: str | None, tz: str | None,
            lang: str, unsubscribe_url: str | None) -> dict:
    zone = tz or event.timezone
    local = event.starts_at.astimezone(ZoneInfo(zone))
    when = format_datetime(local, "d MMMM, EEEE, HH:mm", locale=lang)
    tzname = local.tzname() or zone
    medium = WAVE_MEDIUM.get(wave, wave)
    return {
        "event": {
            "title": event.title,
            "slug": event.slug,
            "venue": event.venue,
            "url": with_utm(str(event.url), source=channel, medium=medium, campaign=event.slug)
            if event.url else None,
            "registration_url": with_utm(str(event.registration_url), source=channel,
                                         medium=medium, campaign=event.slug),
            "topic": event.topic,
            "description": event.description,
        },
        "when": when,
        "when_zone": tzname,
        "starts_at": local,
        "contact": {"name": name},
        "wave": wave,
        "channel": channel,
        "unsubscribe_url": unsubscribe_url,
    }


def render(event: EventSpec, wave: str, channel: str, lang: str, ctx: dict,
           override: str | None = None) -> Rendered:
    env = environment(override)
    parts = PARTS.get(channel, ("txt",))
    out: dict[str, str] = {}
    for part in parts:
        try:
            template = env.select_template(template_names(wave, channel, lang, part))
        except TemplateNotFound:
            raise TemplateProblem(
                f"no template for the {wave} wave on {channel} in {lang!r}: looked for "
                + ", ".join(template_names(wave, channel, lang, part))
                + f" in {override or DEFAULT_TEMPLATES}"
            ) from None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{exc.filename}:{exc.lineno}: {exc.message}") from None
        try:
            out[part] = template.render(ctx).strip()
        except UndefinedError as exc:
            raise TemplateProblem(
                f"{template.filename}:{_error_line(template.filename)}: {exc.message}"
            ) from None
        except TemplateError as exc:
            raise TemplateProblem(f"{template.filename}: {exc}") from None
    return Rendered(text=out["txt"], subject=out.get("subject"), html=out.get("html"))


def _error_line(filename: str | None) -> str:
    """The template line being rendered when the error was raised (from the traceback)."""
    import sys
    import traceback

    tb = sys.exc_info()[2]
    line = "?"
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == filename:
            line = str(lineno)
    return line


def sample_check(event: EventSpec, waves: dict[str, list[str]], override: str | None = None,
                 now: datetime | None = None) -> None:
    """Render every template the campaign will use, for a sample contact in each language,
    before anything is sent. Raises TemplateProblem naming the file and line."""
    for wave, channels in waves.items():
        for channel in channels:
            for lang in LANGUAGES:
                ctx = context(event, wave, channel, name="Sample Contact", tz=event.timezone,
                              lang=lang, unsubscribe_url="https://example.org/u/sample")
                render(event, wave, channel, lang, ctx, override)
