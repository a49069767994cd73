"""How many SMS segments a text costs, by the rules carriers (and Twilio) bill by.

A text made only of GSM-7 characters goes in 7-bit septets: 160 in a single message, 153
per segment once it is split (the rest of each segment carries the concatenation header).
A character of the GSM-7 extension table (`^{}\\[~]|€` and form feed) costs two septets,
and the pair is never split across segments. Any other character (Cyrillic, emoji, curly
quotes) switches the whole text to UCS-2: 70 UTF-16 code units in a single message, 67 per
segment, a surrogate pair (an emoji) never split.
"""

from __future__ import annotations

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


def encoding(text: str) -> str:
    """`GSM-7` when every character has a GSM-7 code, else `UCS-2`."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return "GSM-7"
    return "UCS-2"


def _units(text: str) -> tuple[list[int], int, int]:
    """The cost of each character in the text's encoding, and that encoding's limits."""
    if encoding(text) == "GSM-7":
        return [2 if c in GSM7_EXTENSION else 1 for c in text], GSM7_SINGLE, GSM7_PART
    return [2 if ord(c) > 0xFFFF else 1 for c in text], UCS2_SINGLE, UCS2_PART


def segments(text: str) -> int:
    """The number of segments the text is sent (and billed) as; an empty text is one."""
    units, single, part = _units(text)
    if sum(units) <= single:
        return 1
    count, used = 1, 0
    for cost in units:
        if used + cost > part:  # an escape pair or a surrogate pair is never split
            count, used = count + 1, 0
        used += cost
    return count
