"""Events as YAML files: the contract organizers write, validated with errors that name
the file, the line, the field and what is wrong."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from promo.errors import EventError

PROMOTIONAL_WAVES = ("announce", "last_call")
WAVES = (*PROMOTIONAL_WAVES, "reminder")
DIRECT_CHANNELS = ("email", "sms", "voice", "vk", "telegram")
# posted once per wave to a community wall / a Telegram channel; they count against no contact
BROADCAST_CHANNELS = ("vk_wall", "telegram_channel")
Channel = Literal["email", "sms", "voice", "vk", "telegram", "vk_wall", "telegram_channel"]

MAX_DAYS_BEFORE = 21


class WaveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days_before: int | None = Field(None, ge=0)
    at: time = time(11, 0)
    channels: list[Channel] = Field(min_length=1)
    mode: Literal["fallback", "all"] = "fallback"

    @field_validator("at", mode="before")
    @classmethod
    def _parse_at(cls, value: Any) -> Any:
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 11:00 as 660 (sexagesimal)
            return time(value // 60, value % 60) if 0 <= value < 24 * 60 else value
        if isinstance(value, str) and not re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", value.strip()):
            raise ValueError("must be a time of day like \"11:00\"")
        return value

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str]) -> list[str]:
        seen = [c for i, c in enumerate(value) if c in value[:i]]
        if seen:
            raise ValueError(f"channel {seen[0]!r} is listed twice")
        return value


DEFAULT_WAVES: dict[str, dict[str, Any]] = {
    "announce": {"days_before": 14, "at": "11:00", "channels": ["email", "vk", "telegram"],
                 "mode": "fallback"},
    "last_call": {"days_before": 3, "at": "11:00", "channels": ["email", "vk", "telegram", "sms"],
                  "mode": "fallback"},
    "reminder": {"days_before": 1, "at": "11:00", "channels": ["email", "sms", "vk", "telegram"],
                 "mode": "all"},
}


def _configured_waves() -> dict[str, dict[str, Any]]:
    """The built-in wave defaults with the operator's `waves` setting over them."""
    from promo.settings import get_settings

    own = get_settings().waves
    return {name: {**DEFAULT_WAVES[name], **own.get(name, {})} for name in WAVES}


class CampaignSpec(BaseModel):
    """The waves of a campaign. A missing wave gets its default; `null` skips it."""

    model_config = ConfigDict(extra="forbid")

    announce: WaveSpec | None = None
    last_call: WaveSpec | None = None
    reminder: WaveSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return data
        unknown = [k for k in data if k not in WAVES]
        if unknown:
            raise ValueError(
                f"unknown wave {unknown[0]!r}: a campaign has at most two promotional waves "
                f"(announce, last_call) and a reminder"
            )
        merged: dict[str, Any] = {}
        configured = _configured_waves()
        for name in WAVES:
            if name not in data:
                merged[name] = configured[name]
            elif data[name] is None:
                merged[name] = None
            elif isinstance(data[name], dict):
                wave = dict(data[name])
                defaults = configured[name]
                for key in ("days_before", "at", "mode", "channels"):
                    wave.setdefault(key, defaults[key])
                merged[name] = wave
            else:
                merged[name] = data[name]
        return merged

    @model_validator(mode="after")
    def _rules(self) -> CampaignSpec:
        if self.reminder is not None and self.reminder.days_before != 1:
            raise ValueError("reminder.days_before must be 1: the reminder goes the day before")
        if self.reminder is not None:
            broadcast = [c for c in self.reminder.channels if c in BROADCAST_CHANNELS]
            if broadcast:
                raise ValueError(
                    f"reminder.channels: {broadcast[0]} is a public post; the reminder goes "
                    f"only to registrants, on direct channels"
                )
        for name in PROMOTIONAL_WAVES:
            wave = getattr(self, name)
            if wave is not None and wave.days_before is None:
                raise ValueError(f"{name}.days_before: give the number of days before the event")
            if wave is not None and wave.days_before > MAX_DAYS_BEFORE:
                raise ValueError(
                    f"{name}.days_before is {wave.days_before}: promotion starts no earlier "
                    f"than {MAX_DAYS_BEFORE} days before the event"
                )
        if (self.announce and self.last_call
                and self.announce.days_before < self.last_call.days_before):
                raise ValueError("announce must come before last_call (more days_before)")
        return self

    def waves(self) -> dict[str, WaveSpec]:
        """The waves that are on, in campaign order."""
        return {name: getattr(self, name) for name in WAVES if getattr(self, name) is not None}


class EventSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,118}$")
    title: str = Field(min_length=1, max_length=300)
    starts_at: datetime
    ends_at: datetime | None = None
    timezone: str
    venue: str | None = None
    url: AnyHttpUrl | None = None
    registration_url: AnyHttpUrl
    topic: str = Field(min_length=1, max_length=64)
    # the series whose audience the event builds (reports, the show-up forecast); default:
    # the topic
    series: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,119}$")
    language: Literal["ru", "en"] = "ru"
    description: str | None = None
    # a folder of templates that override the defaults (relative to the event file)
    templates: str | None = None
    # inline templates, over the folder and the defaults: texts.<wave>.<channel>.<lang> is the
    # text (for email a mapping of subject, txt, html); rendered like the template files
    texts: dict[Literal["announce", "last_call", "reminder"], dict[Channel, dict[
        Literal["ru", "en"], str | dict[Literal["subject", "txt", "html"], str]]]] | None = None
    campaign: CampaignSpec = Field(default_factory=lambda: CampaignSpec.model_validate({}))
    # the organizer called the event off: running the campaign again cancels its pending waves
    cancelled: bool = False

    @field_validator("campaign", mode="before")
    @classmethod
    def _null_campaign(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        # topics match contacts' topics, which imports store lower-cased
        return value.strip().lower()

    @field_validator("series", mode="before")
    @classmethod
    def _series(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (like Europe/Moscow)") from None
        return value

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a UTC offset, like 2026-12-10T19:00:00+03:00")
        return value

    @model_validator(mode="after")
    def _place(self) -> EventSpec:
        if not self.venue and not self.url:
            raise ValueError("give a venue (for an event in a place) or a url (for an online one)")
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    @property
    def series_name(self) -> str:
        """The series the event belongs to: `series`, else its topic."""
        return self.series or self.topic

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def local_start(self) -> datetime:
        return self.starts_at.astimezone(self.zone)

    def wave_time(self, wave: WaveSpec) -> datetime:
        """When a wave is sent: `days_before` the start's local date, at `at`, in the event's zone."""
        day: date = self.local_start.date() - timedelta(days=wave.days_before or 0)
        return datetime.combine(day, wave.at, tzinfo=self.zone)


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Maps each field path in the YAML document to its 1-based line."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, key.value)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def parse_event(text: str, source: str = "<event>") -> EventSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise EventError(source, [f"{where}not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise EventError(source, ["the file must be a mapping of fields (slug:, title:, ...)"])
    try:
        return EventSpec.model_validate(data)
    except ValidationError as exc:
        lines = _line_index(text)
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            loc = tuple(p for p in loc if p not in ("function-after", "function-before"))
            field = ".".join(str(p) for p in loc) or "(event)"
            line = None
            for n in range(len(loc), -1, -1):
                if loc[:n] in lines:
                    line = lines[loc[:n]]
                    break
            msg = err["msg"].removeprefix("Value error, ")
            # a campaign-wide rule names its wave and field first: point at that line
            m = re.match(r"(announce|last_call|reminder)\.(\w+)\b", msg)
            if m and loc == ("campaign",):
                loc = ("campaign", m.group(1), m.group(2))
                field = ".".join(loc)
                line = lines.get(loc) or lines.get(loc[:2]) or line
            if err["type"] == "missing":
                msg = "is required"
            elif err["type"] == "extra_forbidden":
                msg = "is not a known field"
            prefix = f"line {line}: " if line else ""
            problems.append(f"{prefix}{field}: {msg}")
        raise EventError(source, problems) from None


def load_event(path: str | Path) -> EventSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EventError(str(path), ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EventError(str(path), [f"cannot be read: {exc}"]) from None
    return parse_event(text, str(path))
