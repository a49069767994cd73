"""Rendering messages from the Jinja2 templates under `templates/`, and checking them.

Sandboxed, undefined variables are errors, HTML is autoescaped. A template is named
`<wave>/<channel>.<lang>.<part>.j2` (part: `subject`, `html`, `txt` for email, `txt` for the
rest). It is looked up in three layers, the first that has it wins: the event's inline
`texts:`, the event's own template folder (`templates:`), the defaults. Within a layer a
channel without a template of its own may use `<wave>/message.<lang>.txt.j2`.

Every message is checked against its channel's limits (SMS segments, VK, Telegram, the
TwiML of a call) and an email must carry its unsubscribe link: a template that breaks a rule
raises TemplateProblem, at plan time for a sample contact (`sample_check`) and again for
each message at send time.
"""

from __future__ import annotations

import math
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, get_timezone_location
from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    select_autoescape,
)
from jinja2.filters import do_center, do_format, do_indent
from jinja2.sandbox import SandboxedEnvironment

from channels.calendar import google_calendar_url
from channels.sms_segments import segments as sms_segments
from flows.events import BROADCAST_CHANNELS, EventSpec
from promo.errors import UserError
from promo.settings import Settings, get_settings

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LANGUAGES = ("ru", "en")
PARTS = {"email": ("subject", "html", "txt")}
# the UTM medium names the kind of wave (promotion or reminder); utm_content names the wave
WAVE_MEDIUM = {"announce": "promotion", "last_call": "promotion", "reminder": "reminder"}

# channel limits, in characters of the text as sent
MAX_CHARS = {
    "vk": 9000,  # messages.send and wall.post
    "vk_wall": 9000,
    "telegram": 4096,  # sendMessage, after entity parsing
    "telegram_channel": 4096,
}
# Twilio refuses a call whose inline `twiml` is longer (error 32018)
MAX_TWIML_CHARS = 4000
# speech rate for the estimate of a call's billed minutes
WORDS_PER_SECOND = 2.5

# how dates read, per language (Babel patterns); the zone is the contact's
DATE_PATTERN = {"ru": "EEEE, d MMMM", "en": "EEEE, MMMM d"}
SHORT_DATE_PATTERN = {"ru": "EEE, d MMM", "en": "EEE, MMM d"}
TIME_PATTERN = {"ru": "HH:mm", "en": "h:mm a"}
WHEN_FORMAT = {"ru": "{date}, {time} ({zone})", "en": "{date}, {time} ({zone} time)"}

# what one template may cost to render (an organizer's typo must not stop a plan or a wave):
# the items of a range(), the characters of a rendered part, the seconds of one rendering
MAX_RANGE = 10_000
MAX_OUTPUT = 500_000
MAX_RENDER_SECONDS = 2.0

SAMPLE_NAMES = {"ru": "Константин", "en": "Christopher"}
SAMPLE_FAR_ZONE = "Asia/Kamchatka"
SAMPLE_ODD_ZONE = "Asia/Kathmandu"  # UTC+5:45: the longest zone label


class TemplateProblem(UserError):
    """A template that fails to render or breaks a channel's rules: names the file, the line
    and what is wrong."""


@dataclass
class Rendered:
    text: str
    subject: str | None = None
    html: str | None = None
    template: str | None = None  # the file (or inline text) the text part came from


# -- links ----------------------------------------------------------------------------------

def utm_medium(wave: str) -> str:
    return WAVE_MEDIUM.get(wave, wave)


def with_utm(url: str, *, source: str, medium: str, campaign: str,
             content: str | None = None) -> str:
    """The URL with the UTM tags set (any it had are replaced)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("utm_")]
    query += [("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign)]
    if content:
        query.append(("utm_content", content))
    return urlunsplit(parts._replace(query=urlencode(query)))


def tagged(url: str, event: EventSpec, wave: str, channel: str) -> str:
    """A link as a message of this wave on this channel carries it."""
    return with_utm(url, source=channel, medium=utm_medium(wave), campaign=event.slug,
                    content=wave)


# served by the webhook server (`channels/links.py`)
SHORT_LINK_PATH = "/go/{slug}/{channel}/{wave}"


def short_link(settings: Settings, event: EventSpec, wave: str, channel: str) -> str:
    """A short link for SMS, where every character counts: the webhook server redirects it
    to the registration page with the UTM tags of this wave and channel (`resolve_short_link`)."""
    path = SHORT_LINK_PATH.format(slug=event.slug, channel=channel, wave=wave)
    return settings.public_url.rstrip("/") + path


def resolve_short_link(event: EventSpec, channel: str, wave: str) -> str:
    """Where `short_link` leads."""
    return tagged(str(event.registration_url), event, wave, channel)


# -- the context ----------------------------------------------------------------------------

def pick_language(contact_language: str | None, event: EventSpec,
                  default: str | None = None) -> str:
    """The contact's language if we have templates in it, then the event's, then the default."""
    if default is None:
        default = get_settings().default_language
    for lang in (contact_language, event.language, default):
        primary = (lang or "").replace("_", "-").split("-")[0].lower()
        if primary in LANGUAGES:
            return primary
    return LANGUAGES[0]


@lru_cache(maxsize=1024)
def when_parts(moment: datetime, zone: str, lang: str) -> dict[str, str]:
    """The date, the time and the zone's name, as a contact reads them in their language."""
    local = moment.astimezone(ZoneInfo(zone))
    date = format_datetime(local, DATE_PATTERN.get(lang, DATE_PATTERN["en"]), locale=lang)
    short = format_datetime(local, SHORT_DATE_PATTERN.get(lang, SHORT_DATE_PATTERN["en"]),
                            locale=lang)
    time = format_datetime(local, TIME_PATTERN.get(lang, TIME_PATTERN["en"]), locale=lang)
    place = get_timezone_location(ZoneInfo(zone), locale=lang, return_city=True)
    return {"date": date, "short_date": short, "time": time, "zone": place,
            "zone_short": zone_offset(local, lang)}


def zone_offset(local: datetime, lang: str) -> str:
    """A zone in a few characters, for an SMS: Russian readers count from Moscow (МСК+2),
    the others from UTC (UTC+5)."""
    base, label = ("Europe/Moscow", "МСК") if lang == "ru" else ("UTC", "UTC")
    offset = local.utcoffset() - local.astimezone(ZoneInfo(base)).utcoffset()
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return label
    sign = "+" if minutes > 0 else "-"  # ASCII: a typographic minus would make an SMS UCS-2
    hours, rest = divmod(abs(minutes), 60)
    return f"{label}{sign}{hours}" + (f":{rest:02d}" if rest else "")


def context(event: EventSpec, wave: str, channel: str, *, name: str | None, tz: str | None,
            lang: str, unsubscribe_url: str | None, settings: Settings | None = None,
            ) -> dict[str, Any]:
    """The variables every template gets (the README's "Templates" section lists them).

    `tz` is the contact's zone (the event's when None: a public post); dates read in it.
    """
    settings = settings or get_settings()
    zone = tz or event.timezone
    try:
        ZoneInfo(zone)
    except (KeyError, ValueError, OSError):
        zone = event.timezone  # a contact's unknown zone: the event's is the best guess
    w = dict(when_parts(event.starts_at, zone, lang))
    own_zone = zone == event.timezone
    registration_url = tagged(str(event.registration_url), event, wave, channel)
    url = tagged(str(event.url), event, wave, channel) if event.url else None
    host = urlsplit(str(event.registration_url)).hostname or ""
    when = WHEN_FORMAT.get(lang, WHEN_FORMAT["en"]).format(**w)
    return {
        "event": {
            "title": event.title,
            "slug": event.slug,
            "venue": event.venue,
            "online": not event.venue,
            "url": url,
            "registration_url": registration_url,
            "short_url": short_link(settings, event, wave, channel),
            "registration_site": host.removeprefix("www."),
            "topic": event.topic,
            "description": event.description,
            "timezone": event.timezone,
        },
        "when": when,
        "when_short": f"{w['short_date']}, {w['time']}"
        + ("" if own_zone else f" ({w['zone_short']})"),
        "date": w["date"],
        "time": w["time"],
        "when_zone": w["zone"],
        "zone_short": w["zone_short"],
        "same_zone": own_zone,  # the contact is in the event's zone
        "starts_at": event.starts_at.astimezone(ZoneInfo(zone)),
        "contact": {"name": name},
        "broadcast": channel in BROADCAST_CHANNELS,
        "wave": wave,
        "channel": channel,
        "lang": lang,
        "unsubscribe_url": unsubscribe_url,
        "calendar_url": google_calendar_url(event, lang, registration_url, url),
    }


# -- templates ------------------------------------------------------------------------------

class LayeredLoader(BaseLoader):
    """Looks a template up layer by layer. `@<n>/<name>` asks layer n only (what `render`
    does, so an event's `message` template beats a default channel template); a plain name
    (an `{% import %}` of macros) takes the first layer that has it."""

    def __init__(self, layers: list[BaseLoader]):
        self.layers = layers

    def get_source(self, environment: Environment, template: str
                   ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template.startswith("@"):
            index, _, name = template[1:].partition("/")
            # `@<n>/` is render's own way of asking; an {% include %} may write anything
            if not index.isdigit() or int(index) >= len(self.layers):
                raise TemplateNotFound(template)
            return self.layers[int(index)].get_source(environment, name)
        for layer in self.layers:
            try:
                return layer.get_source(environment, template)
            except TemplateNotFound:
                continue
        raise TemplateNotFound(template)


class InlineLoader(BaseLoader):
    """The event's `texts:`, named like the template files; the "file name" in an error says
    where in the event file the text is."""

    def __init__(self, texts: tuple[tuple[str, str, str], ...]):
        self.texts = {name: (label, source) for name, label, source in texts}

    def get_source(self, environment: Environment, template: str
                   ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self.texts:
            raise TemplateNotFound(template)
        label, source = self.texts[template]
        return source, label, lambda: True


def inline_texts(event: EventSpec) -> tuple[tuple[str, str, str], ...]:
    """(template name, label, source) for every text in the event's `texts:`; the label
    (`texts.<wave>.<channel>.<lang>[.<part>]`) stands for the file name in errors."""
    out = []
    for wave, channels in (event.texts or {}).items():
        for channel, langs in channels.items():
            for lang, value in langs.items():
                parts = value if isinstance(value, dict) else {"txt": value}
                for part, source in parts.items():
                    label = f"texts.{wave}.{channel}.{lang}"
                    if isinstance(value, dict):
                        label += f".{part}"
                    out.append((f"{wave}/{channel}.{lang}.{part}.j2", label, source))
    return tuple(sorted(out))


class RenderLimit(TemplateRuntimeError):
    """A template that would cost more than a message may: too long a loop, too much text,
    too much time."""


# when the rendering under way must end (time.monotonic()); None: not rendering
_deadline: ContextVar[float | None] = ContextVar("render_deadline", default=None)


def _on_time() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise RenderLimit(f"rendering took more than {MAX_RENDER_SECONDS:g} s (a loop too "
                          f"long, or a macro that calls itself?)")


def _limited_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderLimit(f"range() of {len(numbers):,} items: a template may count to at "
                          f"most {MAX_RANGE:,}")
    return numbers


def _timed(items: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` loops through this: nested loops that print nothing still end."""
    for i, item in enumerate(items):
        if i % 64 == 0:
            _on_time()
        yield item


def _size(n: Any, what: str) -> None:
    if isinstance(n, int) and n > MAX_OUTPUT:
        raise RenderLimit(f"{what} of {n:,}: a message is at most {MAX_OUTPUT:,} characters")


_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\d+)|%[-#0 +]*\d*\.(\d+)")


_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d{7,})")


def _check_percent(fmt: Any) -> None:
    if isinstance(fmt, str):
        for m in _PERCENT_WIDTH.finditer(fmt):
            _size(int(m.group(1) or m.group(2)), "a % width")


def _center(value: str, width: int = 80) -> str:
    _size(width, "center() width")
    return do_center(value, width)


def _indent(value: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _size(width if isinstance(width, int) else len(width), "indent() width")
    if isinstance(width, int) and width * (value.count("\n") + 1) > MAX_OUTPUT:
        _size(width * (value.count("\n") + 1), "indent() output")
    return do_indent(value, width, first, blank)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(value)
    return do_format(value, *args, **kwargs)


class LimitedEnvironment(SandboxedEnvironment):
    """The sandbox, with a cost limit: range() is bounded, every loop and every call checks
    the clock, and the operators that multiply text (`*`, `**`, `%`) check the size first."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["range"] = _limited_range
        self.filters.update(center=_center, indent=_indent, format=_format, _timed=_timed)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_timed", [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _on_time()
        if getattr(obj, "__self__", None).__class__ is str:  # "x".center(n), .ljust(n)...
            for arg in args:
                _size(arg, f"{getattr(obj, '__name__', 'a string method')}() argument")
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # "{:1000000000}".format(x): the widths written in the string, and any given as
        # arguments ("{:{}}".format(x, n)), are checked before it formats
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        for m in _FORMAT_WIDTH.finditer(value.__self__):
            _size(int(m.group(1)), "a format width")

        def checked(*args: Any, **kwargs: Any) -> str:
            for arg in (*args, *kwargs.values()):
                _size(arg, "a format argument")
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _on_time()
        if operator == "*":
            for text, times in ((left, right), (right, left)):
                if isinstance(text, str | list | tuple) and isinstance(times, int):
                    _size(len(text) * times, "text times a number")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int) and abs(left) > 1
                    and right * math.log2(abs(left)) > 4096):
                raise RenderLimit(f"{left} ** {right}: a number too large for a message")
        elif operator == "%":
            _check_percent(left)
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=64)
def environment(override: str | None = None,
                inline: tuple[tuple[str, str, str], ...] = ()) -> SandboxedEnvironment:
    layers: list[BaseLoader] = [FileSystemLoader(str(DEFAULT_TEMPLATES))]
    if override:
        layers.insert(0, FileSystemLoader(override))
    if inline:
        layers.insert(0, InlineLoader(inline))
    return LimitedEnvironment(
        loader=LayeredLoader(layers),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def template_names(wave: str, channel: str, lang: str, part: str) -> list[str]:
    names = [f"{wave}/{channel}.{lang}.{part}.j2"]
    if channel not in PARTS:
        names.append(f"{wave}/message.{lang}.txt.j2")
    return names


def _where(override: str | None, inline: tuple) -> str:
    places = (["the event's texts"] if inline else []) + ([override] if override else [])
    return ", ".join([*places, str(DEFAULT_TEMPLATES)])


def render(event: EventSpec, wave: str, channel: str, lang: str, ctx: dict,
           override: str | None = None, settings: Settings | None = None,
           check: bool = True) -> Rendered:
    """Render the message and (unless `check` is off: the preview shows it first) check it
    against the channel's rules."""
    inline = inline_texts(event)
    env = environment(override, inline)
    layers = len(env.loader.layers)  # type: ignore[union-attr]
    parts = PARTS.get(channel, ("txt",))
    out: dict[str, str] = {}
    source = None
    for part in parts:
        names = template_names(wave, channel, lang, part)
        try:
            template = env.select_template([f"@{i}/{n}" for i in range(layers) for n in names])
        except TemplateNotFound:
            raise TemplateProblem(
                f"no template for the {wave} wave on {channel} in {lang!r}: looked for "
                f"{', '.join(names)} in {_where(override, inline)}"
            ) from None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(
                f"{_at(exc.filename or exc.name, exc.lineno)}: {exc.message}") from None
        except RecursionError:  # the parser and the compiler recurse per nesting level
            candidates = [f"@{i}/{n}" for i in range(layers) for n in names]
            raise TemplateProblem(f"{_at(_source_label(env, candidates), None)}: nested too "
                                  f"deep to be read") from None
        try:
            out[part] = _render_limited(template, ctx).strip()
        except UndefinedError as exc:
            raise TemplateProblem(f"{_error_location(template.filename)}: {exc.message} "
                                  f"(the {wave} wave on {channel}, {lang})") from None
        except TemplateNotFound as exc:
            raise TemplateProblem(f"{_error_location(template.filename)}: no template "
                                  f"{exc.name!r} to include or import") from None
        except TemplateError as exc:
            raise TemplateProblem(f"{_error_location(template.filename)}: {exc}") from None
        except RecursionError:
            raise TemplateProblem(f"{_error_location(template.filename)}: calls nested too "
                                  f"deep (a macro that calls itself?)") from None
        except Exception as exc:  # noqa: BLE001 - whatever a template does, its file and line
            raise TemplateProblem(f"{_error_location(template.filename)}: "
                                  f"{type(exc).__name__}: {exc}") from None
        if part == "txt":
            source = template.filename
    subject = " ".join(out["subject"].split()) if "subject" in out else None  # one header line
    rendered = Rendered(text=out["txt"], subject=subject, html=out.get("html"), template=source)
    if check:
        check_limits(channel, lang, rendered, ctx, settings or get_settings())
    return rendered


def _source_label(env: Environment, names: list[str]) -> str | None:
    """The file name (or inline label) of the first of `names` that exists."""
    for name in names:
        try:
            return env.loader.get_source(env, name)[1]  # type: ignore[union-attr]
        except TemplateNotFound:
            continue
    return None


def _render_limited(template: Any, ctx: dict) -> str:
    """The template rendered within its limits of time and size; a limit is raised inside
    the template (where it was when the limit hit), so that the error names its line."""
    token = _deadline.set(time.monotonic() + MAX_RENDER_SECONDS)
    try:
        chunks: list[str] = []
        size = 0
        stream = template.generate(ctx)
        for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            try:
                if size > MAX_OUTPUT:
                    raise RenderLimit(f"renders to more than {MAX_OUTPUT:,} characters")
                _on_time()
            except RenderLimit as exc:
                stream.throw(exc)
        return "".join(chunks)
    finally:
        _deadline.reset(token)


def _error_location(filename: str | None) -> str:
    """`file:line` of the innermost template frame being rendered when the error was raised
    (Jinja rewrites the traceback so that its frames carry the template's file and line)."""
    tb = sys.exc_info()[2]
    where = _at(filename, None)
    for frame, lineno in traceback.walk_tb(tb):
        if "__jinja_template__" in frame.f_globals or frame.f_code.co_filename == filename:
            where = _at(frame.f_code.co_filename, lineno)
    return where


def _at(filename: str | None, line: int | None) -> str:
    """`file:line` for a template file; for an inline text, where it is in the event file."""
    number = "?" if line is None else str(line)
    if filename and filename.startswith("texts."):
        return f"{filename} (in the event file), line {number} of the text"
    return f"{filename}:{number}"


# -- channel rules --------------------------------------------------------------------------

def voice_twiml(text: str, lang: str) -> str:
    """The inline TwiML a call speaks (the voice channel builds it; the check measures it)."""
    from channels.twilio_voice import twiml

    return twiml(text, lang)


def check_limits(channel: str, lang: str, rendered: Rendered, ctx: dict,
                 settings: Settings) -> None:
    """Refuse a message its channel would refuse, cut, or bill beyond the organizer's limit."""
    where = rendered.template or channel
    if not rendered.text:
        raise TemplateProblem(f"{where}: renders to an empty message")
    if channel == "sms":
        n = sms_segments(rendered.text)
        if n > settings.max_sms_segments:
            raise TemplateProblem(
                f"{where}: the SMS is {n} segments ({len(rendered.text)} characters), more than "
                f"max_sms_segments = {settings.max_sms_segments}: shorten the template"
            )
    elif channel == "voice":
        size = len(voice_twiml(rendered.text, lang))
        if size > MAX_TWIML_CHARS:
            raise TemplateProblem(
                f"{where}: the call's TwiML is {size} characters; Twilio takes at most "
                f"{MAX_TWIML_CHARS}: shorten the script"
            )
    elif channel in MAX_CHARS and len(rendered.text) > MAX_CHARS[channel]:
        raise TemplateProblem(
            f"{where}: {len(rendered.text)} characters; {channel} takes at most "
            f"{MAX_CHARS[channel]}"
        )
    if channel == "email" and ctx.get("unsubscribe_url"):
        for part, body in (("txt", rendered.text), ("html", rendered.html or "")):
            if ctx["unsubscribe_url"] not in body:
                raise TemplateProblem(
                    f"the {part} part of the {ctx.get('wave')} email ({lang}) has no unsubscribe "
                    f"link: every email carries {{{{ unsubscribe_url }}}}"
                )


# -- plan-time checks and the cost estimate ------------------------------------------------

def sample_context(event: EventSpec, wave: str, channel: str, lang: str,
                   settings: Settings, tz: str | None = None,
                   name: str | None = None) -> dict[str, Any]:
    """The context of a sample contact, in the event's zone unless `tz` says otherwise (no
    contact for a public post)."""
    from audiences.tokens import unsubscribe_url

    broadcast = channel in BROADCAST_CHANNELS
    return context(
        event, wave, channel,
        name=None if broadcast else name or SAMPLE_NAMES.get(lang, "Sample"),
        tz=None if broadcast else tz or event.timezone, lang=lang,
        unsubscribe_url=unsubscribe_url(settings, 1_000_000, channel) if channel == "email"
        else None,
        settings=settings,
    )


def sample_languages(event: EventSpec, channel: str, settings: Settings) -> tuple[str, ...]:
    """A public post goes out once, in the event's language; a contact may read either."""
    if channel in BROADCAST_CHANNELS:
        return (pick_language(None, event, settings.default_language),)
    return LANGUAGES


def sample_check(event: EventSpec, waves: dict[str, list[str]], override: str | None = None,
                 settings: Settings | None = None) -> dict[tuple[str, str, str], Rendered]:
    """Render every template the campaign will use, for a sample contact in each language,
    before anything is sent. Raises TemplateProblem naming the file and line; returns the
    samples by (wave, channel, language)."""
    settings = settings or get_settings()
    # the longest texts a real contact can get: their zone named (a far one, and one with
    # half hours: "МСК+2:45"), and a name that is not in the language's alphabet (a Cyrillic
    # name turns an English SMS into UCS-2, which fits half as much)
    far = SAMPLE_FAR_ZONE if event.timezone != SAMPLE_FAR_ZONE else "Europe/Moscow"
    worst = [(tz, name) for tz in (far, SAMPLE_ODD_ZONE) for name in SAMPLE_NAMES.values()]
    samples: dict[tuple[str, str, str], Rendered] = {}
    for wave, channels in waves.items():
        for channel in channels:
            for lang in sample_languages(event, channel, settings):
                ctx = sample_context(event, wave, channel, lang, settings)
                samples[(wave, channel, lang)] = render(event, wave, channel, lang, ctx,
                                                        override, settings)
                if channel in BROADCAST_CHANNELS:
                    continue
                for tz, name in worst:
                    ctx = sample_context(event, wave, channel, lang, settings, tz=tz, name=name)
                    render(event, wave, channel, lang, ctx, override, settings)
    return samples


def estimate(channel: str, text: str, settings: Settings | None = None
             ) -> tuple[int, float]:
    """(billed units, cost) of one message: SMS segments, a call's started minutes, or one
    message; the cost from the `prices` setting."""
    settings = settings or get_settings()
    if channel == "sms":
        units = sms_segments(text)
    elif channel == "voice":
        seconds = len(text.split()) / WORDS_PER_SECOND
        units = max(1, math.ceil(seconds / 60))
    else:
        units = 1
    return units, round(units * settings.prices.get(channel, 0.0), 6)


UNITS = {"sms": "segment", "voice": "minute"}


def content_estimate(event: EventSpec, wave: str, channel: str, lang: str,
                     override: str | None = None, settings: Settings | None = None,
                     ) -> dict[str, Any]:
    """What the plan shows per wave and channel: the sample message's SMS segments (1 for
    other channels), its billed units and its estimated cost."""
    settings = settings or get_settings()
    ctx = sample_context(event, wave, channel, lang, settings)
    r = render(event, wave, channel, lang, ctx, override, settings)
    units, cost = estimate(channel, r.text, settings)
    return {
        "segments": units if channel == "sms" else 1,
        "units": units,
        "unit": UNITS.get(channel, "message"),
        "cost_per_message": cost,
        "currency": settings.currency,
        "characters": len(r.text),
    }


def override_folder(event: EventSpec, source: Path) -> str | None:
    """The event's template folder (`templates:`, relative to the event file)."""
    if not event.templates:
        return None
    folder = (source.parent / event.templates).resolve()
    if not folder.is_dir():
        raise UserError(f"{source}: templates: {event.templates!r} is not a folder")
    return str(folder)
