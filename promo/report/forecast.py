"""How many of those registered will come: a per-registrant forecast from the series' history.

Each registrant gets a probability of coming:

- the prior is the series' show-up rate (everyone who registered for its past events and
  whether they came), adjusted for how late the person registered (the series' own rate
  among late registrants, the last `LATE_DAYS` days, against early ones) and for whether
  this is their first registration in the series (first-timers' own rate against
  returning registrants'); each adjustment is a ratio shrunk towards 1 when data is thin;
- a person with a record in the series moves from that prior towards their own: `came` of
  `registered` past events, as a beta-binomial with `strength` pseudo-registrations of prior
  (chosen on the history itself: the strength that best predicted each past event from the
  events before it);
- the expected number is the sum. The 80% range adds to the registrants' own chance the
  event's shared luck (weather, a competing event): the spread of the past events' actual
  numbers around what this model said for them one step ahead, shrunk towards a default
  when there are few events.

With no history the prior is the 30-45% of free events (PRODUCT.md) and the range is wide.

Registrations still to come (`to_come`): made days before the start, the forecast above
counts only those registered so far. The series says how many more usually register after
that point (per registrant already in, at the same number of days before the start) and
how often those late registrants come; `to_come` adds them, with their count's own spread
from event to event in the range.
Plain functions of plain data: the report feeds them from the store, the backtest
(`bench/forecast_backtest.py`) from generated series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LATE_DAYS = 3.0  # registered within this many days of the start: a late registrant
NO_HISTORY_RATE = (0.30, 0.45)  # what a free event's registrants usually do (PRODUCT.md)
STRENGTHS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # candidate prior strengths, in registrations
DEFAULT_STRENGTH = 4.0  # until two past events can choose one
LATE_SHRINK = 30.0  # pseudo-registrations pulling the late/early rates to the series rate
DEFAULT_EVENT_SD = 0.03  # the event's shared luck, in show-up points, before the history has its own
EVENT_SD_PRIOR_WEIGHT = 3.0  # in events
Z80 = 1.2816  # the normal quantile of 90%: an 80% central range


@dataclass(frozen=True, slots=True)
class Registrant:
    person: int
    lead_days: float  # how long before the start they registered, in days


@dataclass(frozen=True, slots=True)
class PastEvent:
    """A past event of the series whose attendance is known: (person, lead_days, came) each."""

    registrants: tuple[tuple[int, float, bool], ...]

    @property
    def registered(self) -> int:
        return len(self.registrants)

    @property
    def came(self) -> int:
        return sum(1 for _, _, c in self.registrants if c)


@dataclass(frozen=True)
class Forecast:
    expected: int
    low: int
    high: int
    registered: int
    expected_exact: float
    basis: str  # "history" | "no history"
    events_used: int
    returning: int  # registrants with a record in the series
    newcomers: int
    series_rate: float | None
    note: str

    to_come: dict | None = None  # registrations still to come, added (see the module's doc)

    def as_dict(self) -> dict:
        return {"expected": self.expected, "low": self.low, "high": self.high,
                "with_registrations_to_come": self.to_come,
                "registered": self.registered, "basis": self.basis,
                "events_used": self.events_used, "returning_registrants": self.returning,
                "new_registrants": self.newcomers,
                "series_rate": None if self.series_rate is None else round(self.series_rate, 3),
                "range": "80%", "note": self.note}


class _State:
    """The series' history up to some event: totals, late/early totals, each person's record."""

    def __init__(self) -> None:
        self.n = self.c = 0
        self.late_n = self.late_c = 0
        self.first_n = self.first_c = 0
        self.people: dict[int, list[int]] = {}  # person -> [registered, came]

    def add(self, event: PastEvent) -> None:
        for person, lead, came in event.registrants:
            self.n += 1
            self.c += came
            if lead < LATE_DAYS:
                self.late_n += 1
                self.late_c += came
            if person not in self.people:
                self.first_n += 1
                self.first_c += came
            record = self.people.setdefault(person, [0, 0])
            record[0] += 1
            record[1] += came

    def rate(self) -> float:
        return self.c / self.n

    def base(self) -> tuple[float, float, float, float]:
        """How a late and an early registrant, a first-timer and a returning one, compare
        with the series' rate (ratios)."""
        m = self.rate()

        def ratio(c: int, n: int) -> float:
            return (c + LATE_SHRINK * m) / (n + LATE_SHRINK) / m if m else 1.0

        return (ratio(self.late_c, self.late_n), ratio(self.c - self.late_c, self.n - self.late_n),
                ratio(self.first_c, self.first_n),
                ratio(self.c - self.first_c, self.n - self.first_n))

    def probability(self, person: int, lead: float, strength: float,
                    base: tuple[float, float, float, float]) -> float:
        registered, came = self.people.get(person, (0, 0))
        prior = (self.rate() * (base[0] if lead < LATE_DAYS else base[1])
                 * (base[3] if registered else base[2]))
        p = (strength * prior + came) / (strength + registered)
        return min(0.99, max(0.01, p))


def _one_step_ahead(history: Sequence[PastEvent]) -> tuple[_State, float, float]:
    """Walk the history in order, predicting each event from those before it: the state
    after all of it, the strength that predicted best, and the event-level variance (in
    show-up points squared) those predictions missed by beyond the registrants' own chance."""
    state = _State()
    loglik = dict.fromkeys(STRENGTHS, 0.0)
    excess: dict[float, list[float]] = {k: [] for k in STRENGTHS}
    scored = 0
    for event in history:
        if state.n and event.registered:
            scored += 1
            base = state.base()
            for k in STRENGTHS:
                expected = variance = 0.0
                for person, lead, came in event.registrants:
                    p = state.probability(person, lead, k, base)
                    loglik[k] += math.log(p if came else 1 - p)
                    expected += p
                    variance += p * (1 - p)
                miss = event.came - expected
                excess[k].append((miss * miss - variance) / event.registered ** 2)
        state.add(event)
    strength = max(STRENGTHS, key=lambda k: loglik[k]) if scored >= 2 else DEFAULT_STRENGTH
    # the first few predictions had almost no history to go on: their misses say more about
    # that than about the events' luck
    seen = excess.get(strength, [])[2:]
    tau2 = (sum(seen) + EVENT_SD_PRIOR_WEIGHT * DEFAULT_EVENT_SD ** 2) / (
        len(seen) + EVENT_SD_PRIOR_WEIGHT)
    return state, strength, max(tau2, 0.0)


def to_come(history: Sequence[PastEvent], registered: int, days_left: float,
            expected: float, variance: float) -> dict | None:
    """The forecast with the registrations still to come `days_left` days before the start
    (None when no past event says how many come that late)."""
    ratios: list[float] = []
    late_n = late_c = total_n = total_c = 0
    for e in history:
        early = sum(1 for _, lead, _ in e.registrants if lead >= days_left)
        late = [c for _, lead, c in e.registrants if lead < days_left]
        total_n += e.registered
        total_c += e.came
        late_n += len(late)
        late_c += sum(late)
        if early:
            ratios.append(len(late) / early)
    if not ratios or not total_n:
        return None
    ratio = sum(ratios) / len(ratios)
    spread = (sum((r - ratio) ** 2 for r in ratios) / (len(ratios) - 1)
              if len(ratios) > 1 else ratio ** 2)
    m = total_c / total_n
    rate = (late_c + LATE_SHRINK * m) / (late_n + LATE_SHRINK)
    more = ratio * registered
    total = expected + more * rate
    # the late registrants' own chance, and how their number varies from event to event
    var = variance + more * rate * (1 - rate) + (registered * rate) ** 2 * spread
    sd = Z80 * math.sqrt(var)
    return {"expected": round(total), "low": max(0, math.floor(total - sd)),
            "high": math.ceil(total + sd), "registrations_to_come": round(more),
            "their_show_up_rate": round(rate, 3)}


def forecast(history: Sequence[PastEvent], registrants: Sequence[Registrant],
             days_left: float | None = None) -> Forecast:
    """How many of `registrants` will come, from the series' past events (oldest first);
    with `days_left` (days until the start), also with the registrations still to come."""
    n = len(registrants)
    known = [e for e in history if e.registered]
    if not known:
        lo_rate, hi_rate = NO_HISTORY_RATE
        mid = (lo_rate + hi_rate) / 2
        low = lo_rate * n - Z80 * math.sqrt(n * lo_rate * (1 - lo_rate))
        high = hi_rate * n + Z80 * math.sqrt(n * hi_rate * (1 - hi_rate))
        return Forecast(
            round(mid * n), max(0, math.floor(low)), min(n, math.ceil(high)), n, mid * n,
            "no history", 0, 0, n, None,
            "no past event of the series has its attendance: the usual 30-45% of a free "
            "event's registrants, and a wide range")
    state, strength, tau2 = _one_step_ahead(known)
    base = state.base()
    expected = variance = 0.0
    returning = 0
    for r in registrants:
        p = state.probability(r.person, r.lead_days, strength, base)
        expected += p
        variance += p * (1 - p)
        returning += r.person in state.people
    variance += tau2 * n * n
    spread = Z80 * math.sqrt(variance)
    low = max(0, math.floor(expected - spread))
    high = min(n, math.ceil(expected + spread))
    rate = state.rate()
    more = to_come(known, n, days_left, expected, variance) if days_left is not None else None
    return Forecast(
        round(expected), low, high, n, expected, "history", len(known), returning,
        n - returning, rate,
        f"from {len(known)} past event{'s' if len(known) != 1 else ''} of the series "
        f"({rate:.0%} came); {returning} of the {n} registrants have a record in it", more)


def naive(history: Sequence[PastEvent], registered: int) -> float:
    """The forecast to beat: the registered times the series' past average show-up rate."""
    rates = [e.came / e.registered for e in history if e.registered]
    rate = sum(rates) / len(rates) if rates else sum(NO_HISTORY_RATE) / 2
    return rate * registered
