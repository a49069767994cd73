"""The SMS segment counter against the examples of Twilio's published segment rules."""

from __future__ import annotations

import pytest

from channels.sms_segments import encoding, segments


@pytest.mark.parametrize(("text", "expected_segments", "expected_encoding"), [
    ("1234567890" * 16, 1, "GSM-7"),  # 160 GSM-7 digits: one message
    ("1234567890" * 16 + "1", 2, "GSM-7"),  # 161: two segments of up to 153
    ("0" * 153 * 2, 2, "GSM-7"),
    ("0" * 153 * 2 + "0", 3, "GSM-7"),
    ("{" + "0" * 158, 1, "GSM-7"),  # `{` is an extension character: 2 + 158 = 160 septets
    ("{" + "0" * 159, 2, "GSM-7"),  # 161 septets
    ("[]~^|\\€" + "0" * 146, 1, "GSM-7"),  # each of the extension table counts twice
    ("0" * 152 + "{" + "0" * 152, 3, "GSM-7"),  # the escape pair never straddles two segments
    ("Привет" * 11 + "Прив", 1, "UCS-2"),  # 70 Cyrillic letters
    ("Привет" * 11 + "Приве", 2, "UCS-2"),  # 71
    ("Ж" * 67 * 2, 2, "UCS-2"),
    ("Ж" * 67 * 2 + "Ж", 3, "UCS-2"),
    ("😀" * 35, 1, "UCS-2"),  # an emoji is two UTF-16 code units: 70
    ("😀" * 35 + "a", 2, "UCS-2"),  # 71 units
    ("Ж" * 69 + "😀", 2, "UCS-2"),  # 71 units, though 70 characters
    ("0" * 159 + "Ж", 3, "UCS-2"),  # one non-GSM character switches the whole text to UCS-2
    ("Ж" * 66 + "😀" + "Ж" * 66, 3, "UCS-2"),  # 134 units, but a surrogate pair is not split
    ("", 1, "GSM-7"),  # an empty body is still billed as one message
])
def test_segments_follow_twilios_rules(text: str, expected_segments: int,
                                       expected_encoding: str) -> None:
    assert encoding(text) == expected_encoding
    assert segments(text) == expected_segments
