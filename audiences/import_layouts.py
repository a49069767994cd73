"""Import, the column layouts: the generic CSV and the registration platforms' exports
(timepad, meetup), with the words their columns use for yes, no and cancelled."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """How one kind of export names its columns: our field -> the header names it may carry
    (compared lower-cased, with ё read as е and runs of spaces as one)."""

    name: str
    columns: dict[str, tuple[str, ...]]
    date_formats: tuple[str, ...] = ()
    # a generic file's unknown column is likely a typo; an export's are just other data
    warn_unknown: bool = False


_DAY_FIRST = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S",
              "%Y-%m-%d %H:%M", "%Y-%m-%d")

GENERIC = Layout(
    "generic",
    {
        "name": ("name",),
        "email": ("email",),
        "phone": ("phone",),
        "vk_id": ("vk_id",),
        "telegram_chat_id": ("telegram_chat_id",),
        "language": ("language",),
        "timezone": ("timezone",),
        "topics": ("topics",),
        "consent": ("consent",),
        "consent_at": ("consent_at",),
        "registered_at": ("registered_at",),
        "attended": ("attended",),
        "status": ("status",),
        # the monthly digest, yes or no: its own subscription (yes also without email consent)
        "digest": ("digest",),
    },
    _DAY_FIRST,
    warn_unknown=True,
)

TIMEPAD = Layout(
    "timepad",
    {
        "last_name": ("фамилия",),
        "first_name": ("имя",),
        "name": ("фио", "имя и фамилия", "участник"),
        "email": ("e-mail", "email", "электронная почта", "почта"),
        "phone": ("телефон", "мобильный телефон", "номер телефона"),
        "registered_at": ("дата регистрации", "дата и время регистрации", "дата заказа",
                          "дата создания заказа"),
        "status": ("статус", "статус заказа", "статус билета"),
        "attended": ("посетил", "посетил мероприятие", "пришел", "отметка о посещении", "явка"),
        "email_consent": ("согласие на рассылку", "подписка на рассылку",
                          "согласен получать рассылку", "согласие на получение рассылки"),
    },
    _DAY_FIRST,
)

MEETUP = Layout(
    "meetup",
    {
        "name": ("name",),
        "email": ("email", "email address"),
        "phone": ("phone", "phone number", "mobile phone"),
        "registered_at": ("rsvped on", "rsvp date"),
        "status": ("rsvp", "rsvp response"),
        "attended": ("attendance", "attended"),
    },
    ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M",
     "%m/%d/%Y", "%b %d, %Y %I:%M %p", "%B %d, %Y %I:%M %p", "%b %d, %Y", "%B %d, %Y"),
)

# how a registration came (kept raw; the report attributes it): UTM tags and the short link,
# where the registration platform passes them on, under the same names in every layout
ATTRIBUTION = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "short_link")
for _layout in (GENERIC, TIMEPAD, MEETUP):
    _layout.columns.update({f: (f, f.replace("_", " "), f.replace("_", "-")) for f in ATTRIBUTION})

LAYOUTS = {layout.name: layout for layout in (GENERIC, TIMEPAD, MEETUP)}
