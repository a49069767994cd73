"""Backtest of the show-up forecast (promo/report/forecast.py) on series with known behaviour.

Each generated series is a meetup that meets `--events` times. People have their own
propensity to come (a beta distribution around 35%), a taste for the series (how often they
register), and register early or late (late ones come more often); first-timers come less
often; each event has its own luck (weather, a competing event) shared by everyone in it;
new people arrive every time, in big or small numbers, so the series grows from a few dozen
registered to about 100 / 30 came, 110 / 39, 130 / 45 by the 7th-10th meetup and 250 / 100
by the 20th.

For every event after the first, the forecast is made from the events before it, with that
event's registrants, and compared with who came. Beside it, in the same run, the naive
forecast: the registered times the series' past average show-up rate (its 80% range: the
binomial one around it). Printed: mean absolute error in people and in show-up points, and
how often the truth fell inside the 80% range; and two oracles for scale: one that knows
every registrant's own chance (what the best forecast made before the event could know),
and one that knows the event's luck too (only each person's coin flip is left).

    .venv/bin/python bench/forecast_backtest.py [--series 40] [--events 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promo.report.forecast import (
    Z80,
    PastEvent,
    Registrant,
    forecast,
    naive,
)

EARLY_DAYS = 3.0  # the second mode: forecast this long before the start


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def generate_series(rng: random.Random, events: int,
                    chances: list[tuple[float, float]] | None = None) -> list[PastEvent]:
    """One series with known behaviour: a list of events, oldest first. `chances`, if
    given, gets each event's true expected number of people who come, with the event's luck
    and without it (the oracles)."""
    people: list[tuple[float, float]] = []  # (propensity to come, chance to register)
    series: list[PastEvent] = []
    seen: set[int] = set()
    for index in range(events):
        # new people find the series each time; the audience builds slowly
        for _ in range(max(0, int(rng.gauss(70 + 2 * index, 8) * rng.choice((0.5, 1.0, 1.6))))):
            propensity = rng.betavariate(1.2, 2.4)
            # those who come also like the series more: they register more often
            people.append((propensity, min(0.9, rng.betavariate(1.2, 5.0) * (0.4 + propensity))))
        luck = rng.gauss(0, 0.15)  # the event's own: weather, a competing event, the speaker
        registrants = []
        expected = expected_without_luck = 0.0
        for person, (propensity, taste) in enumerate(people):
            first_time = person not in seen
            newcomer_boost = 0.6 if person >= len(people) - 70 else 0.0
            if rng.random() >= min(0.95, taste + newcomer_boost):
                continue
            late = rng.random() < 0.3
            lead = rng.uniform(0.1, 3.0) if late else rng.uniform(3.0, 21.0)
            # first-timers of a free event are the likeliest no-shows
            own = _logit(propensity) + (0.5 if late else -0.15) - (0.5 if first_time else 0.0)
            chance = _sigmoid(own + luck)
            expected_without_luck += _sigmoid(own)
            seen.add(person)
            expected += chance
            registrants.append((person, lead, rng.random() < chance))
        series.append(PastEvent(tuple(registrants)))
        if chances is not None:
            chances.append((expected, expected_without_luck))
    return series


def backtest(n_series: int, events: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    model_err, model_pts, model_in = [], [], []
    naive_err, naive_pts, naive_in = [], [], []
    prior_err, prior_in = [], []
    oracle_err, oracle_blind_err = [], []
    early_err, early_in, early_naive_err = [], [], []
    sizes: list[tuple[int, int]] = []
    for _ in range(n_series):
        truths: list[tuple[float, float]] = []
        series = generate_series(rng, events, truths)
        sizes.extend((e.registered, e.came) for e in series[:4])
        for t, event in enumerate(series):
            n, truth = event.registered, event.came
            if n == 0:
                continue
            registrants = [Registrant(p, lead) for p, lead, _ in event.registrants]
            f = forecast(series[:t], registrants)
            if t == 0:  # no history: the prior and its wide range
                prior_err.append(abs(f.expected_exact - truth))
                prior_in.append(f.low <= truth <= f.high)
                continue
            model_err.append(abs(f.expected_exact - truth))
            model_pts.append(100 * abs(f.expected_exact - truth) / n)
            model_in.append(f.low <= truth <= f.high)
            # three days before: only those registered by then are known
            so_far = [r for r in registrants if r.lead_days >= EARLY_DAYS]
            if so_far:
                ahead = forecast(series[:t], so_far, days_left=EARLY_DAYS).to_come
                if ahead is not None:
                    early_err.append(abs(ahead["expected"] - truth))
                    early_in.append(ahead["low"] <= truth <= ahead["high"])
                    growth = [e.registered / max(1, sum(1 for _, lead, _ in e.registrants
                                                        if lead >= EARLY_DAYS))
                              for e in series[:t]]
                    early_naive_err.append(abs(
                        naive(series[:t], len(so_far)) * sum(growth) / len(growth) - truth))
            oracle_err.append(abs(truths[t][0] - truth))
            oracle_blind_err.append(abs(truths[t][1] - truth))
            guess = naive(series[:t], n)
            rate = guess / n
            spread = Z80 * math.sqrt(n * rate * (1 - rate))
            naive_err.append(abs(guess - truth))
            naive_pts.append(100 * abs(guess - truth) / n)
            naive_in.append(guess - spread <= truth <= guess + spread)

    def mean(xs: list) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "forecasts": len(model_err),
        "model_mae_people": mean(model_err), "model_mae_points": mean(model_pts),
        "model_coverage": mean(model_in),
        "naive_mae_people": mean(naive_err), "naive_mae_points": mean(naive_pts),
        "naive_coverage": mean(naive_in), "oracle_mae_people": mean(oracle_err),
        "oracle_no_luck_mae_people": mean(oracle_blind_err),
        "early_forecasts": len(early_err), "early_mae_people": mean(early_err),
        "early_coverage": mean(early_in), "early_naive_mae_people": mean(early_naive_err),
        "no_history_forecasts": len(prior_err), "no_history_mae_people": mean(prior_err),
        "no_history_coverage": mean(prior_in),
        "first_events": sizes[:4],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    r = backtest(args.series, args.events, args.seed)
    took = time.perf_counter() - started
    print(f"{args.series} generated series x {args.events} events (seed {args.seed}); first "
          f"events of the first series, registered/came: "
          + ", ".join(f"{n}/{c}" for n, c in r["first_events"]))
    print(f"{r['forecasts']} forecasts, each from the events before it ({took:.1f} s)")
    print(f"{'':<28}{'MAE people':>12}{'MAE points':>12}{'80% range holds':>18}")
    print(f"{'per-registrant forecast':<28}{r['model_mae_people']:>12.2f}"
          f"{r['model_mae_points']:>12.2f}{r['model_coverage']:>17.0%}")
    print(f"{'naive (past average rate)':<28}{r['naive_mae_people']:>12.2f}"
          f"{r['naive_mae_points']:>12.2f}{r['naive_coverage']:>17.0%}")
    print(f"{'oracle, each person':<28}{r['oracle_no_luck_mae_people']:>12.2f}"
          f"{'':>30}  (knows everyone's own chance, not the event's luck)")
    print(f"{'oracle, and the luck':<28}{r['oracle_mae_people']:>12.2f}"
          f"{'':>30}  (knows the event's luck too: only coin flips are left)")
    print(f"{EARLY_DAYS:.0f} days before the start, with the registrations still to come "
          f"projected ({r['early_forecasts']} forecasts): MAE {r['early_mae_people']:.2f} "
          f"people, range holds {r['early_coverage']:.0%}; naive (so far x the past growth x "
          f"the past rate) {r['early_naive_mae_people']:.2f}")
    print(f"first events (no history, the 30-45% prior): {r['no_history_forecasts']} forecasts, "
          f"MAE {r['no_history_mae_people']:.2f} people, range holds "
          f"{r['no_history_coverage']:.0%}")


if __name__ == "__main__":
    main()
