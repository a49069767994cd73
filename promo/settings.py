"""Settings: `promo.toml` in the working directory, overridden by `PROMO_*` variables.

Every field has a default that runs the whole product on a fresh machine: a SQLite
file and an outbox folder in the working directory, no provider credentials (every
channel then writes to the outbox).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import time, timedelta
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DIRECT_CHANNELS = ("email", "sms", "voice", "vk", "telegram")

# the default secret_key: public, so fine for the demo and tests, refused where links and
# webhooks face the world (`Settings.require_own_secret`)
PLACEHOLDER_SECRET = "change-me-in-production"

DEFAULT_CAPS = {
    "voice": "1/30d",
    "sms": "1/7d",
    "email": "3/7d",
    "vk": "2/7d",
    "telegram": "3/7d",
    # all direct channels together
    "direct": "4/7d",
}

# the price of one message (sms: per segment, voice: per started minute), in `currency`;
# round figures for the estimate in the plan: set your providers' prices
DEFAULT_PRICES = {
    "email": 0.001,
    "sms": 0.05,
    "voice": 0.10,
    "vk": 0.0,
    "telegram": 0.0,
    "vk_wall": 0.0,
    "telegram_channel": 0.0,
}

# calls per second per provider account (PRODUCT.md); SendGrid publishes no fixed Mail Send
# figure (its 429 carries X-RateLimit-Reset), and one SMS sender (a long code) takes 1 per second
DEFAULT_RATE_LIMITS = {
    "sendgrid": 100.0,
    "twilio_sms": 1.0,
    "twilio_calls": 1.0,
    "vk_group": 20.0,
    "vk_user": 3.0,
    "telegram": 30.0,
}

DEFAULT_QUIET_HOURS = {
    # the window in which a message may be delivered, in the contact's time zone
    "sms": "09:00-21:00",
    "voice": "10:00-20:00",
}


@dataclass(frozen=True)
class Cap:
    """At most `limit` messages in any rolling window of `window`."""

    limit: int
    window: timedelta

    def __str__(self) -> str:
        return f"{self.limit} per {self.window.days} days"


@dataclass(frozen=True)
class SendWindow:
    """The local times of day a channel may deliver in (start inclusive, end exclusive)."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


_CAP_RE = re.compile(r"^\s*([0-9]{1,7})\s*/\s*([0-9]{1,7})\s*d\s*$")
# a window longer than ten years caps nothing a campaign could notice, and a much longer one
# is past what a date can hold
MAX_CAP_DAYS = 3660
_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_cap(text: str) -> Cap:
    m = _CAP_RE.match(text) if isinstance(text, str) else None
    if not m or int(m.group(2)) == 0:
        raise ValueError(f"{text!r} is not a cap like '3/7d' (3 messages per 7 days)")
    if int(m.group(2)) > MAX_CAP_DAYS:
        raise ValueError(f"{text!r}: a cap's window is at most {MAX_CAP_DAYS} days")
    return Cap(int(m.group(1)), timedelta(days=int(m.group(2))))


def parse_window(text: str) -> SendWindow:
    m = _WINDOW_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a time window like '09:00-21:00'")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if start >= end:
        raise ValueError(f"{text!r}: the window must start before it ends")
    return SendWindow(start, end)


# PROMO_* variables that are not settings but are read by the command line
ENV_NOT_SETTINGS = ("PROMO_CONFIG", "PROMO_DEBUG")


class Settings(BaseSettings):
    # strict: a value of the wrong type is refused, not converted (`true` is not 1, "yes" is
    # not a bool, "0.05" is not a price); nan and inf are no number an operator means
    model_config = SettingsConfigDict(
        env_prefix="PROMO_",
        toml_file="promo.toml",
        extra="forbid",
        env_nested_delimiter="__",
        strict=True,
        allow_inf_nan=False,
    )

    database_url: str = Field(
        "sqlite:///promo.db",
        description="SQLAlchemy URL; PostgreSQL (postgresql+psycopg://...) for several workers",
    )
    outbox_dir: Path = Field(Path("outbox"), description="where the outbox channel writes",
                             strict=False)  # TOML has no path type: a string is the way
    default_region: str = Field("RU", description="region for phone numbers without +country")
    default_timezone: str = Field("Europe/Moscow", description="when neither contact nor event says")
    default_language: Literal["ru", "en"] = Field("ru", description="the templates' languages")

    caps: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CAPS))
    quiet_hours: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_QUIET_HOURS))
    reminder_counts_against_caps: bool = True
    # the waves of an event file that does not set them: per wave any of days_before, at,
    # channels, mode (e.g. [waves.announce] days_before = 10); the event file overrides these
    waves: dict[str, dict[str, Any]] = Field(default_factory=dict)
    send_batch_size: int = Field(500, ge=1, le=10_000)

    # content checks and the plan's cost estimate (channels/render.py)
    max_sms_segments: int = Field(2, ge=1, le=10, description="an SMS template longer is refused")
    prices: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    currency: str = "USD"

    # secret used to sign unsubscribe links and webhook tokens
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    public_url: str = Field("http://127.0.0.1:8000", description="where webhooks are reachable")
    # webhooks (promo/webhooks): each endpoint refuses every request until its secret is set.
    # Twilio signs with twilio_auth_token, checked against public_url + the path (so a proxy
    # in front changes nothing, as long as public_url is the address Twilio is given).
    sendgrid_webhook_public_key: str | None = Field(
        None, description="the Event Webhook's verification key (base64, as SendGrid shows it)")
    vk_callback_secret: SecretStr | None = None
    vk_confirmation_code: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_bot_username: str | None = Field(None, description="for t.me/<bot>?start= links")
    registration_webhook_secret: SecretStr | None = None

    # providers: a channel is live when its credentials are set, otherwise it writes to the outbox
    sendgrid_api_key: SecretStr | None = None
    sendgrid_host: str = "https://api.sendgrid.com"
    sendgrid_sandbox: bool = False
    email_from: str = "Event Promo <events@example.org>"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str | None = None
    vk_group_token: SecretStr | None = None
    vk_group_id: int | None = None
    vk_user_token: SecretStr | None = None
    vk_api_url: str = "https://api.vk.com/method/"
    telegram_bot_token: SecretStr | None = None
    telegram_channel: str | None = None
    telegram_base_url: str = "https://api.telegram.org/bot"
    # where Twilio posts SMS and call status (None: no callbacks); answering-machine detection
    # for calls: "Enable" or "DetectMessageEnd" (None: off)
    twilio_status_callback_url: str | None = None
    twilio_machine_detection: str | None = None
    # sending: each provider account's rate limit (calls per second, shared by the batch tasks
    # of a process), calls in flight per batch task, one call's timeout, retry time per call
    rate_limits: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    send_concurrency: int = Field(8, ge=1, le=256)
    send_timeout: float = Field(10.0, gt=0)
    send_retry_seconds: float = Field(120.0, ge=0)

    @field_validator("caps")
    @classmethod
    def _check_caps(cls, value: dict[str, str]) -> dict[str, str]:
        merged = dict(DEFAULT_CAPS) | value
        for name, text in merged.items():
            if name not in (*DIRECT_CHANNELS, "direct"):
                raise ValueError(f"unknown channel {name!r} (known: {', '.join(DEFAULT_CAPS)})")
            parse_cap(text)
        return merged

    @field_validator("rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: dict[str, float]) -> dict[str, float]:
        merged = dict(DEFAULT_RATE_LIMITS) | value
        for name, rate in merged.items():
            if name not in DEFAULT_RATE_LIMITS:
                raise ValueError(f"unknown provider account {name!r} "
                                 f"(known: {', '.join(DEFAULT_RATE_LIMITS)})")
            if rate <= 0:
                raise ValueError(f"{name}: a rate limit must be above 0 calls per second")
        return merged

    @field_validator("default_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        # a name too long for a file name is an OSError
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"{value[:100]!r} is not an IANA time zone (like Europe/Moscow)"
                             ) from None
        return value

    @field_validator("email_from")
    @classmethod
    def _check_sender(cls, value: str) -> str:
        from email_validator import EmailNotValidError, validate_email

        _, address = parseaddr(value)
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError:
            raise ValueError(f"{value[:200]!r} is not a sender like "
                             f"'Event Promo <events@example.org>'") from None
        return value

    @field_validator("public_url", "sendgrid_host", "vk_api_url", "telegram_base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{value[:200]!r} is not an http(s) URL like https://promo.example.org")
        return value

    @field_validator("waves")
    @classmethod
    def _check_waves(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # checked now, by the rules an event file's campaign: is checked with, so that a bad
        # wave is named here as the `waves` setting, not later as a fault of some event file
        from pydantic import ValidationError

        from flows.events import DEFAULT_WAVES, WAVES, CampaignSpec

        for name in value:
            if name not in WAVES:
                raise ValueError(f"unknown wave {name!r} (announce, last_call, reminder)")
        merged = {name: {**DEFAULT_WAVES[name], **value.get(name, {})} for name in WAVES}
        try:
            CampaignSpec.model_validate(merged)
        except ValidationError as exc:
            raise ValueError("; ".join(
                ".".join(str(p) for p in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
                if e["loc"] else e["msg"].removeprefix("Value error, ")
                for e in exc.errors())) from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _check_quiet_hours(cls, value: dict[str, str]) -> dict[str, str]:
        merged = dict(DEFAULT_QUIET_HOURS) | value
        for name, text in merged.items():
            if name not in DIRECT_CHANNELS:
                raise ValueError(f"unknown channel {name!r}")
            if text:  # an empty string switches the window off
                parse_window(text)
        return merged

    @field_validator("prices")
    @classmethod
    def _check_prices(cls, value: dict[str, float]) -> dict[str, float]:
        merged = dict(DEFAULT_PRICES) | value
        for name, price in merged.items():
            if name not in DEFAULT_PRICES:
                raise ValueError(f"unknown channel {name!r} (known: {', '.join(DEFAULT_PRICES)})")
            if price < 0:
                raise ValueError(f"{name}: a price cannot be negative")
        return merged

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_environment(settings_cls)
        return (
            init_settings,
            env_settings,
            _TomlFile(settings_cls, toml_file=config_path()),
        )

    def require_own_secret(self, what: str) -> None:
        """Refuse `what` while secret_key is the published placeholder: anyone could sign
        unsubscribe and Telegram /start links with it (and tie a chat to any contact)."""
        from promo.errors import UserError

        if self.secret_key.get_secret_value() == PLACEHOLDER_SECRET:
            raise UserError(f"{what} needs a secret of your own: set secret_key in promo.toml "
                            f"or PROMO_SECRET_KEY (a long random string, kept private)")

    def cap_rules(self) -> dict[str, Cap]:
        return {name: parse_cap(text) for name, text in self.caps.items()}

    def send_windows(self) -> dict[str, SendWindow]:
        return {name: parse_window(text) for name, text in self.quiet_hours.items() if text}


def config_path() -> Path:
    """promo.toml, or the file PROMO_CONFIG names (which then must exist)."""
    from promo.errors import UserError

    named = os.environ.get("PROMO_CONFIG")
    if named is None:
        path = Path("promo.toml")
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: a folder, not a settings file")
        return path
    path = Path(named)
    if not path.is_file():
        what = "a folder, not a settings file" if path.is_dir() else "no such file"
        raise UserError(f"PROMO_CONFIG={named}: {what}")
    return path


class _TomlFile(TomlConfigSettingsSource):
    """promo.toml read with errors that name the file (and the line when TOML gives one)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        from promo.errors import UserError

        try:
            text = Path(file_path).read_bytes().decode("utf-8")
        except OSError as exc:
            raise UserError(f"{file_path}: cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{file_path}: not UTF-8 text (byte {exc.start}); TOML files are "
                            f"UTF-8") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{file_path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise UserError(f"{file_path}: nested too deep to be settings") from None


def _env_field(settings_cls: type[BaseSettings], name: str) -> str | None:
    """The setting a PROMO_* variable sets (PROMO_CAPS__SMS sets caps), or None."""
    key = name.removeprefix("PROMO_").lower().split("__")[0]
    return key if key in settings_cls.model_fields else None


def check_environment(settings_cls: type[BaseSettings]) -> None:
    """Refuse PROMO_* variables that set nothing (a misspelt PROMO_SENDGRID_KEY would leave
    email in the outbox without a word), and JSON values that do not parse, by name."""
    from promo.errors import UserError

    fields = settings_cls.model_fields
    known = [f"PROMO_{f.upper()}" for f in fields] + list(ENV_NOT_SETTINGS)
    problems = []
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith("PROMO_") or name.upper() in ENV_NOT_SETTINGS:
            continue
        field = _env_field(settings_cls, name.upper())
        if field is None:
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name}: not a setting{hint}")
            continue
        if "__" in name:
            continue
        annotation = str(fields[field].annotation)
        if annotation.startswith(("dict", "list")):
            try:
                json.loads(value)
            except ValueError as exc:
                problems.append(f"{name}: not valid JSON ({exc}); like {name}="
                                + ("'{\"sms\": \"2/7d\"}'" if field == "caps" else "'{...}'"))
            except RecursionError:
                problems.append(f"{name}: nested too deep")
    if problems:
        raise UserError("invalid settings in the environment:\n"
                        + "\n".join(f"  {p}" for p in problems))


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, list(Settings.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _problem(err: Any) -> str:
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "not a setting" + _did_you_mean(str(err["loc"][0]))
    return f"{where}: {msg}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; `reset_settings()` after changing the environment."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from promo.errors import UserError

    source = os.environ.get("PROMO_CONFIG", "promo.toml")
    try:
        return Settings()
    except ValidationError as exc:
        raise UserError(
            "invalid settings (from " + source + " or PROMO_* variables):\n"
            + "\n".join(f"  {_problem(err)}" for err in exc.errors())
        ) from None
    except SettingsError as exc:  # a PROMO_* value the settings library cannot read
        raise UserError(f"invalid settings in the environment: {exc}") from None


def reset_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()
