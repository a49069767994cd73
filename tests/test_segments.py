"""The wave audience: the SQL standing of each channel is exactly `channel_block`'s rule."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from audiences.segments import _standings, channel_block
from promo.db import session_scope
from promo.db.models import Consent, Contact

T1 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=3)
TIMES = (None, T1, T2)


def test_sql_standing_equals_channel_block_for_every_combination(store):
    combos = list(itertools.product(TIMES, TIMES, (None, T1), TIMES, (True, False)))
    expected = {}
    with session_scope() as s:
        for i, (granted, withdrawn, unreachable, opted_out, has_row) in enumerate(combos, 1):
            s.execute(insert(Contact), [{"id": i, "email": f"c{i}@example.org",
                                         "opted_out_at": opted_out}])
            if has_row:
                s.execute(insert(Consent), [{"contact_id": i, "channel": "email",
                                             "granted_at": granted, "withdrawn_at": withdrawn,
                                             "unreachable_at": unreachable}])
                expected[i] = channel_block(True, granted, withdrawn, unreachable, opted_out)
            else:
                expected[i] = channel_block(True, None, None, None, opted_out)
        got = {cid: blocked for cid, _, blocked in _standings(s, Contact.id > 0, ["email", "sms"])}
    assert {cid: b["email"] for cid, b in got.items()} == expected
    assert all(b["sms"] == "no address" for b in got.values())
    assert set(expected.values()) == {None, "no consent", "opted out", "unreachable"}
