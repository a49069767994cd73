"""The waves of a campaign and their rules, as an event file's `campaign:` and the operator's
`waves` setting both give them. Apart from `promo.domain.event` so that the settings can check
their `waves` by these rules without importing the module that reads the settings."""

from __future__ import annotations

import re
from datetime import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from promo.domain.names import BROADCAST_CHANNELS, PROMOTIONAL_WAVES, WAVES, ChannelLiteral

# no promotional message goes earlier than this before the event starts
MAX_DAYS_BEFORE = 21


class WaveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # strict: YAML's `true` is not 1 day
    days_before: StrictInt | None = Field(None, ge=0)
    at: time = time(11, 0)
    channels: list[ChannelLiteral] = Field(min_length=1)
    mode: Literal["fallback", "all"] = "fallback"

    @field_validator("at", mode="before")
    @classmethod
    def _parse_at(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML's `true` is not one minute past midnight
            raise ValueError("must be a time of day like \"11:00\"")  # noqa: TRY004 (pydantic)
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


class CampaignWaves(BaseModel):
    """The waves of a campaign, every field given, checked by the rules (`CampaignSpec`
    fills in the defaults)."""

    model_config = ConfigDict(extra="forbid")

    announce: WaveSpec | None = None
    last_call: WaveSpec | None = None
    reminder: WaveSpec | None = None

    @model_validator(mode="after")
    def _rules(self) -> CampaignWaves:
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
