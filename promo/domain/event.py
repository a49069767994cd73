"""Events as YAML files: the contract organizers write, validated with errors that name
the file, the line, the field and what is wrong."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from promo.domain.names import WAVES, ChannelLiteral, WaveLiteral
from promo.domain.times import check_zone
from promo.domain.waves import DEFAULT_WAVES, CampaignWaves, WaveSpec
from promo.errors import EventError

# an event file is a page of YAML: aliases that expand past this many values are a "billion
# laughs" bomb, not an event
MAX_YAML_VALUES = 10_000
# the years an event may start in: far enough for any plan, and room for the dates computed
# around the start (the calendar entry's end, its zone's rules a year either side)
YEARS = (1970, 9000)


def _configured_waves() -> dict[str, dict[str, Any]]:
    """The built-in wave defaults with the operator's `waves` setting over them."""
    from promo.settings import get_settings

    own = get_settings().waves
    return {name: {**DEFAULT_WAVES[name], **own.get(name, {})} for name in WAVES}


class CampaignSpec(CampaignWaves):
    """The waves of a campaign. A missing wave gets its default; `null` skips it."""

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
        configured: dict[str, dict[str, Any]] = {}

        def defaults(name: str) -> dict[str, Any]:
            # the settings are read only when a field is missing
            if not configured:
                configured.update(_configured_waves())
            return configured[name]

        for name in WAVES:
            if name not in data:
                merged[name] = defaults(name)
            elif data[name] is None:
                merged[name] = None
            elif isinstance(data[name], dict):
                wave = dict(data[name])
                for key in ("days_before", "at", "mode", "channels"):
                    if key not in wave:
                        wave[key] = defaults(name)[key]
                merged[name] = wave
            else:
                merged[name] = data[name]
        return merged


class Recording(BaseModel):
    """A recording of a talk, added after the event: a URL, or `{title, url}`."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=300)
    url: AnyHttpUrl

    @model_validator(mode="before")
    @classmethod
    def _a_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class EventLinks(BaseModel):
    """What else the event left behind: its slides and photos (the digest lists them)."""

    model_config = ConfigDict(extra="forbid")

    slides: AnyHttpUrl | None = None
    photos: AnyHttpUrl | None = None


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
    texts: dict[WaveLiteral, dict[ChannelLiteral, dict[
        Literal["ru", "en"], str | dict[Literal["subject", "txt", "html"], str]]]] | None = None
    campaign: CampaignSpec = Field(default_factory=lambda: CampaignSpec.model_validate({}))
    # added after the event, for the monthly digest: the talks' recordings, slides, photos
    recordings: list[Recording] = Field(default_factory=list, max_length=100)
    links: EventLinks | None = None
    # the organizer called the event off: running the campaign again cancels its pending waves
    cancelled: StrictBool = False

    @field_validator("recordings", mode="before")
    @classmethod
    def _null_recordings(cls, value: Any) -> Any:
        return [] if value is None else value

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
        return check_zone(value)

    @field_validator("starts_at", "ends_at", mode="before")
    @classmethod
    def _a_time(cls, value: Any) -> Any:
        # a number is not a time (0 would be 1970), nor is `true`
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be a time like 2026-12-10T19:00:00+03:00")
        return value

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a UTC offset, like 2026-12-10T19:00:00+03:00")
        if value is not None and not YEARS[0] <= value.astimezone(UTC).year < YEARS[1]:
            raise ValueError(f"the year {value.year} is out of range ({YEARS[0]}-{YEARS[1] - 1})")
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


def _line_index(root: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Maps each field path in the YAML document to its 1-based line. A node reached again
    through an alias is not walked again: the index stays as small as the file."""
    lines: dict[tuple[Any, ...], int] = {}
    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, key.value)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """How many values the document holds once its aliases are expanded (counted per node
    once, so a bomb is measured without being expanded), and the line of the largest."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a node that contains itself: counted once
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(item) for item in node.value)
        else:
            n = 1
        sizes[id(node)] = n
        return n

    return size(root), root.start_mark.line + 1


def _load_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The document's data and its node tree (for the lines of errors)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            total, _ = _expanded_size(root)
            if total > MAX_YAML_VALUES:
                raise EventError(source, [
                    (f"its aliases (*name) expand to more than {MAX_YAML_VALUES:,} values: not "
                     f"an event file (a YAML bomb?)")])
        try:
            return (loader.construct_document(root) if root is not None else None), root
        except (ValueError, OverflowError) as exc:  # a date like 2026-13-45: YAML reads it
            raise EventError(source, [f"not valid YAML: a value cannot be read ({exc})"]
                             ) from None
    finally:
        loader.dispose()


def parse_event(text: str, source: str = "<event>") -> EventSpec:
    try:
        data, root = _load_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise EventError(source, [f"{where}not valid YAML: {problem}"]) from None
    except RecursionError:
        raise EventError(source, ["nested too deep to be an event file"]) from None
    if not isinstance(data, dict):
        raise EventError(source, ["the file must be a mapping of fields (slug:, title:, ...)"])
    try:
        return EventSpec.model_validate(data)
    except RecursionError:
        raise EventError(source, ["nested too deep to be an event file"]) from None
    except ValidationError as exc:
        lines = _line_index(root)
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
