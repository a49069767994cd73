"""Settings: `promo.toml` in the working directory, overridden by `PROMO_*` variables.

Every field has a default that runs the whole product on a fresh machine: a SQLite
file and an outbox folder in the working directory, no provider credentials (every
channel then writes to the outbox).
"""

from __future__ import annotations

import difflib
import os
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
)

from promo.domain.names import DIRECT_CHANNELS
from promo.domain.rules import Cap, SendWindow, parse_cap, parse_window
from promo.settings_sources import TomlFile, check_environment, config_path

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

# the providers whose credentials can live in a Prefect Block (`credential_blocks`)
CREDENTIAL_PROVIDERS = ("sendgrid", "twilio", "vk", "telegram")

DEFAULT_QUIET_HOURS = {
    # the window in which a message may be delivered, in the contact's time zone
    "sms": "09:00-21:00",
    "voice": "10:00-20:00",
}


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
    # a million .eml files would be gigabytes in a million inodes, and creating each file
    # costs more than writing it: past this, a wave's emails go into one mailbox file
    outbox_eml_limit: int = Field(
        10_000, ge=0, description="a wave with more emails than this writes them into one "
        "mbox file (outbox/email/<event>_<wave>.mbox), not an .eml each")
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
    # how many batch tasks of a wave one process keeps in flight (the database pool is sized
    # to it), and how long a sending process's claim on its rows outlives its last sign of
    # life: a process that stops renewing it for this long is dead, its rows are taken over
    send_batches_in_flight: int = Field(16, ge=1, le=64)
    send_lease_seconds: float = Field(10.0, ge=1, le=600)
    # into how many flow runs a deployed wave's sending is split: the wave run sends one part
    # and starts the others as runs of the wave-part/send-part deployment, which any worker of
    # the pool takes (flows/parts.py); a wave of fewer batches is split into fewer parts
    send_workers: int = Field(1, ge=1, le=32)
    # the monthly digest (flows/digest.py): never within this many days of a promotional wave
    # a person got or will get for an event it lists; its channels (email and public posts)
    digest_spacing_days: int = Field(3, ge=0, le=60)
    digest_channels: list[Literal["email", "vk_wall", "telegram_channel"]] = Field(
        default_factory=lambda: ["email", "vk_wall", "telegram_channel"])

    # content checks and the plan's cost estimate (channels/render.py, channels/samples.py)
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

    # providers: a channel is live when its credentials are set, otherwise it writes to the outbox.
    # Each provider's credentials come from a Prefect Block when one is named here
    # (sendgrid, twilio, vk, telegram -> block name; the types: channels/<provider>.py),
    # otherwise from the settings below
    credential_blocks: dict[str, str] = Field(default_factory=dict)
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

    @field_validator("credential_blocks")
    @classmethod
    def _check_credential_blocks(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in CREDENTIAL_PROVIDERS:
                raise ValueError(f"unknown provider {name!r} "
                                 f"(known: {', '.join(CREDENTIAL_PROVIDERS)})")
        return value

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
        from promo.domain.times import check_zone

        return check_zone(value)

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

        from promo.domain.names import WAVES
        from promo.domain.waves import DEFAULT_WAVES, CampaignWaves

        for name in value:
            if name not in WAVES:
                raise ValueError(f"unknown wave {name!r} (announce, last_call, reminder)")
        merged = {name: {**DEFAULT_WAVES[name], **value.get(name, {})} for name in WAVES}
        try:
            CampaignWaves.model_validate(merged)
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
            TomlFile(settings_cls, toml_file=config_path()),
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
