"""The show-up forecast as plain functions: answers known by construction, and the backtest."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from promo.report.forecast import NO_HISTORY_RATE, PastEvent, Registrant, forecast, naive

ROOT = Path(__file__).resolve().parent.parent


def event(first_person: int, registered: int, came: int, lead: float = 10.0) -> PastEvent:
    """`registered` people from `first_person` on, the first `came` of them came."""
    return PastEvent(tuple((first_person + i, lead, i < came) for i in range(registered)))


def newcomers(n: int, first: int = 10_000, lead: float = 10.0) -> list[Registrant]:
    return [Registrant(first + i, lead) for i in range(n)]


def test_with_no_history_the_prior_and_a_wide_range() -> None:
    f = forecast([], newcomers(100))
    assert f.basis == "no history" and f.events_used == 0
    lo, hi = NO_HISTORY_RATE
    assert f.expected == round((lo + hi) / 2 * 100)
    # wide: at least the whole 30-45% band, and more for the registrants' own chance
    assert f.low < lo * 100 and f.high > hi * 100
    assert "no past event" in f.note


def test_newcomers_to_a_series_that_shows_up_at_30_percent_are_expected_at_30_percent() -> None:
    # three past events, 100 different people each, 30 came, all registered early:
    # nothing distinguishes anyone, so every newcomer has the series' rate
    history = [event(0, 100, 30), event(100, 100, 30), event(200, 100, 30)]
    f = forecast(history, newcomers(50))
    assert abs(f.expected_exact - 15.0) < 1e-9
    assert f.expected == 15 and f.low < 15 < f.high
    assert f.basis == "history" and f.events_used == 3 and f.newcomers == 50
    assert f.series_rate == 0.3


def test_a_persons_record_moves_their_chance() -> None:
    # the same 40 people registered three times; the first 12 came every time, the rest never
    history = [event(0, 40, 12) for _ in range(3)]
    faithful = forecast(history, [Registrant(0, 10.0)])
    absent = forecast(history, [Registrant(39, 10.0)])
    stranger = forecast(history, [Registrant(999, 10.0)])
    assert faithful.expected_exact > 0.7
    assert absent.expected_exact < 0.15
    assert absent.expected_exact < stranger.expected_exact < faithful.expected_exact
    assert faithful.returning == 1 and stranger.newcomers == 1


def test_late_registrants_get_the_series_own_late_rate() -> None:
    # late registrants (the last days) came at 60%, early ones at 20%
    history = []
    for k in range(4):
        base = 1000 * k
        late = [(base + i, 1.0, i < 30) for i in range(50)]
        early = [(base + 100 + i, 10.0, i < 10) for i in range(50)]
        history.append(PastEvent(tuple(late + early)))
    late = forecast(history, newcomers(100, lead=0.5)).expected_exact
    early = forecast(history, newcomers(100, lead=12.0)).expected_exact
    assert late > 50 and early < 30


def test_registrations_still_to_come_are_added_at_the_series_own_late_rate() -> None:
    # every past event: 50 registered early (10 came), as many again in the last days (25 came)
    history = []
    for k in range(3):
        base = 1000 * k
        early = [(base + i, 10.0, i < 10) for i in range(50)]
        late = [(base + 100 + i, 1.0, i < 25) for i in range(50)]
        history.append(PastEvent(tuple(early + late)))
    f = forecast(history, newcomers(40, lead=10.0), days_left=3.0)
    more = f.to_come
    assert more["registrations_to_come"] == 40  # as many again as registered by now
    late_rate = (75 + 30 * 0.35) / (150 + 30)  # their rate, shrunk towards the series' 35%
    assert more["their_show_up_rate"] == round(late_rate, 3)
    assert more["expected"] == round(f.expected_exact + 40 * late_rate)
    assert more["low"] <= more["expected"] <= more["high"]
    assert more["high"] - more["low"] > f.high - f.low  # more unknowns, a wider range
    # nobody registers after the start: nothing to add
    assert forecast(history, newcomers(40), days_left=0.0).to_come["registrations_to_come"] == 0


def test_the_range_holds_what_is_registered() -> None:
    history = [event(0, 10, 9), event(10, 10, 9)]
    f = forecast(history, newcomers(5))
    assert 0 <= f.low <= f.expected <= f.high <= 5


def test_naive_is_the_past_average_rate() -> None:
    history = [event(0, 100, 30), event(100, 100, 50)]
    assert naive(history, 200) == 80.0


def test_the_backtest_beats_naive_and_its_range_holds_about_80_percent() -> None:
    spec = importlib.util.spec_from_file_location("forecast_backtest",
                                                  ROOT / "bench" / "forecast_backtest.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.backtest(n_series=6, events=10, seed=3)
    assert r["forecasts"] == 6 * 9
    assert r["model_mae_people"] < r["naive_mae_people"]
    assert r["model_mae_points"] < r["naive_mae_points"]
    assert 0.65 <= r["model_coverage"] <= 0.95
    assert r["early_mae_people"] < r["early_naive_mae_people"]
    assert 0.65 <= r["early_coverage"] <= 0.95
