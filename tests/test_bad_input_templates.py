"""A template may cost only so much (time, output, range()), and whatever goes wrong while
rendering is the template's file and line with what is wrong, never another exception."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.render import TemplateProblem
from channels.samples import sample_check
from channels.sandbox import MAX_OUTPUT
from promo.domain.event import parse_event
from promo.settings import Settings
from tests.bad_input import run_promo, within
from tests.helpers import EVENT_TEMPLATE

STARTS = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
SETTINGS = Settings(_env_file=None)
LABEL = "texts.announce.telegram.ru (in the event file), line"


def event_text(template: str) -> str:
    body = textwrap.indent("hello\n" + template, " " * 8)
    return (EVENT_TEMPLATE.format(slug="python-meetup-74", starts_at=STARTS.isoformat())
            + "texts:\n  announce:\n    telegram:\n      ru: |\n" + body + "\n")


def render_problem(template: str) -> str:
    spec = parse_event(event_text(template))
    with within(20), pytest.raises(TemplateProblem) as caught:
        sample_check(spec, {"announce": ["telegram"]}, None, settings=SETTINGS)
    return str(caught.value)


@pytest.mark.parametrize(("template", "what"), [
    ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
     "range() of 100,000 items"),
    ("{% for i in range(10**9) %}x{% endfor %}", "range() of 1,000,000,000 items"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
     "rendering took more than"),
    ("{% set s = 'ab' * 5000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
     "rendering took more than"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
     "rendering took more than"),
    ("{% for i in range(10000) %}{{ 'y' * 100 }}{% endfor %}",
     f"renders to more than {MAX_OUTPUT:,} characters"),
    ("{{ 'x' * 10**9 }}", "text times a number"),
    ("{{ '%1000000000s' % 'x' }}", "a % width"),
    ("{{ 'x'|center(1000000000) }}", "center() width"),
    ("{{ 'x'.ljust(1000000000) }}", "ljust() argument"),
    ("{{ '{:1000000000}'.format(1) }}", "a format width"),
    ("{{ '{:{}}'.format(1, 1000000000) }}", "a format argument"),
    ("{{ 7 ** 1000000000 }}", "a number too large"),
    ("{% include '@abc/x' %}", "no template '@abc/x'"),
    ("{% include '@99/x' %}", "no template '@99/x'"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nested too deep"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_a_costly_or_failing_template_is_its_line_and_what(template: str, what: str) -> None:
    message = render_problem(template)
    assert message.startswith(f"{LABEL} 2 of the text: "), message
    assert what in message


@pytest.mark.parametrize("template", ["{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
                                      "{% if a %}" * 3000 + "{% endif %}" * 3000,
                                      "{{ 1 " + "+ 1 " * 20000 + "}}"])
def test_a_template_nested_too_deep_to_compile_is_named(template: str) -> None:
    assert render_problem(template) == f"{LABEL} ? of the text: nested too deep to be read"


def test_a_template_within_its_limits_still_renders() -> None:
    spec = parse_event(event_text(
        "{% for i in range(3) %}{{ loop.index }}/{{ loop.length }} {% endfor %}"
        "{{ '-' * 10 }} {{ 2 ** 10 }} {{ '%5s' % 'x' }}"))
    text = sample_check(spec, {"announce": ["telegram"]}, None, settings=SETTINGS)[
        ("announce", "telegram", "ru")].text
    assert text == "hello\n1/3 2/3 3/3 ---------- 1024     x"


def test_plan_with_a_runaway_template_is_a_message_not_a_hang(store: Path) -> None:
    path = store / "event.yaml"
    path.write_text(event_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"))
    with within(60):
        result = run_promo("plan", str(path))
    assert result.code == 2, result
    assert f"error: {LABEL} 2 of the text: range()" in result.err


PIECES = st.sampled_from([
    "{{ event.title }}", "{{ nope }}", "{{ event.nope.deeper }}", "{% for i in range(N) %}",
    "{% endfor %}", "{% if x %}", "{% endif %}", "{{ 'ab' * N }}", "{{ N ** N }}",
    "{{ N / 0 }}", "{{ '%Ns' % 1 }}", "{{ 'x'|center(N) }}", "{% include '@N/x' %}",
    "{% include 'nope' %}", "{% import 'x' as m %}", "{{ ().__class__ }}",
    "{{ range.__globals__ }}", "{% macro m(n) %}{{ m(n) }}{% endmacro %}", "{{ m(1) }}",
    "{{ 'x'.format(N) }}", "{{ loop.length }}", "{{ unsubscribe_url|upper }}", "{%", "}}",
    "{# #}", "{% raw %}", "{% set s = 'x' * N %}", "{{ s|length }}", "{{ [1] * N }}",
    "{{ starts_at.strftime('%Y') }}", "{{ when }}", "{{ '{:N}'.format(1) }}",
])


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(PIECES, min_size=1, max_size=6),
       numbers=st.lists(st.sampled_from(["0", "3", "-1", "99", "10000", "100000", "10**6",
                                         "10**12", "2**64"]), min_size=6, max_size=6))
def test_any_template_renders_or_is_a_template_problem(parts: list[str],
                                                       numbers: list[str]) -> None:
    template = "".join(p.replace("N", n, 1) for p, n in zip(parts, numbers, strict=False))
    spec = parse_event(event_text(template))
    with within(30):
        try:
            sample_check(spec, {"announce": ["telegram"]}, None, settings=SETTINGS)
        except TemplateProblem as exc:
            # the template's line, or (a channel's limit) the template itself
            assert str(exc).startswith("texts.announce.telegram.ru"), str(exc)
