"""Rendering messages from the Jinja2 templates under `templates/`, and checking them.

Sandboxed, undefined variables are errors, HTML is autoescaped. A template is named
`<wave>/<channel>.<lang>.<part>.j2` (part: `subject`, `html`, `txt` for email, `txt` for the
rest). It is looked up in three layers, the first that has it wins: the event's inline
`texts:`, the event's own template folder (`templates:`), the defaults. Within a layer a
channel without a template of its own may use `<wave>/message.<lang>.txt.j2`.

Every message is checked against its channel's limits (SMS segments, VK, Telegram, the
TwiML of a call) and an email must carry its unsubscribe link: a template that breaks a rule
raises TemplateProblem, at plan time for sample contacts (`channels.samples.sample_check`) and again for
each message at send time.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from channels.sandbox import LimitedEnvironment, render_limited
from channels.sms_segments import segments as sms_segments
from promo.domain.event import EventSpec
from promo.errors import UserError
from promo.settings import Settings

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PARTS = {"email": ("subject", "html", "txt")}


def max_chars(channel: str) -> int | None:
    """The provider's limit on a message's text, in characters as sent (None: no such limit;
    SMS counts segments and a call its TwiML). Each provider module states its own."""
    if channel in ("vk", "vk_wall"):
        from channels.vk import MAX_TEXT
    elif channel in ("telegram", "telegram_channel"):
        from channels.telegram import MAX_TEXT
    else:
        return None
    return MAX_TEXT


class TemplateProblem(UserError):
    """A template that fails to render or breaks a channel's rules: names the file, the line
    and what is wrong."""


@dataclass
class Rendered:
    text: str
    subject: str | None = None
    html: str | None = None
    template: str | None = None  # the file (or inline text) the text part came from


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
           override: str | None = None, *, settings: Settings, check: bool = True,
           chosen: dict | None = None) -> Rendered:
    """Render the message and (unless `check` is off: the preview shows it first) check it
    against the channel's rules.

    `chosen` (a dict the caller keeps for a batch) remembers which template each part of a
    message came from: looking it up again costs more than rendering it (candidate names
    through Jinja's cache, a stat of each file to see whether it changed)."""
    key = (id(event), override, wave, channel, lang)
    picked = chosen.get(key) if chosen is not None else None
    if picked is not None and picked[0] is event:
        env, inline, templates = picked[1], picked[2], picked[3]
    else:
        inline = inline_texts(event)
        env = environment(override, inline)
        templates = {}
    layers = len(env.loader.layers)  # type: ignore[union-attr]
    parts = PARTS.get(channel, ("txt",))
    out: dict[str, str] = {}
    source = None
    for part in parts:
        names = template_names(wave, channel, lang, part)
        try:
            template = templates.get(part) or env.select_template(
                [f"@{i}/{n}" for i in range(layers) for n in names])
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
            out[part] = render_limited(template, ctx).strip()
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
        templates[part] = template
    if chosen is not None:
        chosen[key] = (event, env, inline, templates)
    subject = " ".join(out["subject"].split()) if "subject" in out else None  # one header line
    rendered = Rendered(text=out["txt"], subject=subject, html=out.get("html"), template=source)
    if check:
        check_limits(channel, lang, rendered, ctx, settings)
    return rendered


def _source_label(env: Environment, names: list[str]) -> str | None:
    """The file name (or inline label) of the first of `names` that exists."""
    for name in names:
        try:
            return env.loader.get_source(env, name)[1]  # type: ignore[union-attr]
        except TemplateNotFound:
            continue
    return None


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


def max_twiml_chars() -> int:
    from channels.twilio_voice import MAX_TWIML_CHARS

    return MAX_TWIML_CHARS


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
        size, limit = len(voice_twiml(rendered.text, lang)), max_twiml_chars()
        if size > limit:
            raise TemplateProblem(
                f"{where}: the call's TwiML is {size} characters; Twilio takes at most "
                f"{limit}: shorten the script"
            )
    elif (limit := max_chars(channel)) is not None and len(rendered.text) > limit:
        raise TemplateProblem(
            f"{where}: {len(rendered.text)} characters; {channel} takes at most {limit}"
        )
    if channel == "email" and ctx.get("unsubscribe_url"):
        for part, body in (("txt", rendered.text), ("html", rendered.html or "")):
            if ctx["unsubscribe_url"] not in body:
                raise TemplateProblem(
                    f"the {part} part of the {ctx.get('wave')} email ({lang}) has no unsubscribe "
                    f"link: every email carries {{{{ unsubscribe_url }}}}"
                )


def override_folder(event: EventSpec, source: Path) -> str | None:
    """The event's template folder (`templates:`, relative to the event file)."""
    if not event.templates:
        return None
    folder = (source.parent / event.templates).resolve()
    if not folder.is_dir():
        raise UserError(f"{source}: templates: {event.templates!r} is not a folder")
    return str(folder)
