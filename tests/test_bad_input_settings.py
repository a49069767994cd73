"""Bad settings (promo.toml, PROMO_* variables) get one message that names the setting or
the variable and what is wrong; nothing is coerced, nothing unknown is ignored."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promo.errors import UserError
from promo.settings import reset_settings
from tests.bad_input import environment, run_promo, within
from tests.helpers import write_event


@pytest.fixture(autouse=True)
def _no_settings_file_left(store: Path):
    yield
    (store / "promo.toml").unlink(missing_ok=True)  # the store fixture reads settings last


def refused(env: dict[str, str | None]) -> str:
    with environment(env), pytest.raises(UserError) as caught:
        reset_settings()
    return str(caught.value)


@pytest.mark.parametrize("name", ["PROMO_CAPS", "PROMO_QUIET_HOURS", "PROMO_RATE_LIMITS",
                                  "PROMO_WAVES", "PROMO_PRICES"])
def test_malformed_json_is_named_with_its_variable(store: Path, name: str) -> None:
    message = refused({name: "{bad"})
    assert f"{name}: not valid JSON" in message


def test_a_cap_window_past_any_date_is_refused_by_name(store: Path) -> None:
    message = refused({"PROMO_CAPS": '{"sms": "1/99999999999d"}'})
    assert "caps" in message and "1/99999999999d" in message


@pytest.mark.parametrize(("name", "suggestion"), [("PROMO_SENDGRID_KEY", "PROMO_SENDGRID_API_KEY"),
                                                  ("PROMO_CAP", "PROMO_CAPS")])
def test_a_misspelt_variable_is_refused_with_a_suggestion(store: Path, name: str,
                                                          suggestion: str) -> None:
    message = refused({name: "x"})
    assert f"{name}: not a setting (did you mean {suggestion}?)" in message


def test_an_unknown_key_in_promo_toml_gets_a_suggestion_too(store: Path) -> None:
    (store / "promo.toml").write_text('sendgrid_key = "x"\n')
    assert "sendgrid_key: not a setting (did you mean sendgrid_api_key?)" in refused({})


def test_promo_config_naming_a_missing_file_or_a_folder_is_refused(store: Path) -> None:
    assert f"PROMO_CONFIG={store / 'nope.toml'}: no such file" in refused(
        {"PROMO_CONFIG": str(store / "nope.toml")})
    assert "a folder" in refused({"PROMO_CONFIG": str(store)})


def test_promo_toml_that_is_not_utf8_or_nested_too_deep_is_named(store: Path) -> None:
    path = store / "promo.toml"
    path.write_bytes(b'currency = "\xff\xfe"\n')
    assert "promo.toml: not UTF-8" in refused({})
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "promo.toml" in refused({})


@pytest.mark.parametrize("env", [
    {"PROMO_RATE_LIMITS": '{"sendgrid": NaN}'},
    {"PROMO_PRICES": '{"sms": Infinity}'},
    {"PROMO_SEND_TIMEOUT": "inf"},
    {"PROMO_SEND_RETRY_SECONDS": "nan"},
])
def test_nan_and_inf_are_no_numbers(store: Path, env: dict[str, str]) -> None:
    assert "finite number" in refused(env)


@pytest.mark.parametrize(("env", "field"), [
    ({"PROMO_DEFAULT_LANGUAGE": "klingon"}, "default_language"),
    ({"PROMO_EMAIL_FROM": "nobody"}, "email_from"),
    ({"PROMO_PUBLIC_URL": "not a url"}, "public_url"),
    ({"PROMO_DEFAULT_TIMEZONE": "Europe/" + "x" * 300}, "default_timezone"),
])
def test_values_that_would_break_later_are_refused_at_load(store: Path, env: dict[str, str],
                                                           field: str) -> None:
    assert f"  {field}: " in refused(env)


@pytest.mark.parametrize("waves", ['{"announce": {"days_before": 30}}',
                                   '{"last_call": {"channels": ["fax"]}}',
                                   '{"announce": {"days_before": true}}'])
def test_waves_are_checked_at_load_and_named(store: Path, waves: str) -> None:
    assert "  waves: " in refused({"PROMO_WAVES": waves})


@pytest.mark.parametrize("line", ['send_batch_size = "500"', "reminder_counts_against_caps = 1",
                                  "max_sms_segments = true", 'prices = {sms = "0.05"}',
                                  "send_timeout = true"])
def test_promo_toml_values_are_not_coerced(store: Path, line: str) -> None:
    (store / "promo.toml").write_text(line + "\n")
    assert line.split(" ")[0] in refused({})


@pytest.mark.parametrize("value", ["0", "33", "two", "1.5"])
def test_send_workers_is_a_whole_number_of_parts(store: Path, value: str) -> None:
    """Into how many flow runs a wave's sending is split: 1 to 32, named when wrong."""
    assert "send_workers" in refused({"PROMO_SEND_WORKERS": value}).lower()


def test_settings_still_read_what_they_should(store: Path) -> None:
    (store / "promo.toml").write_text('send_batch_size = 300\ncurrency = "EUR"\n'
                                      'prices = {sms = 0.04, email = 1}\n')
    with environment({"PROMO_SEND_TIMEOUT": "5", "PROMO_SENDGRID_SANDBOX": "true",
                      "PROMO_CAPS": '{"sms": "2/7d"}'}):
        s = reset_settings()
        assert (s.send_batch_size, s.currency, s.prices["email"], s.send_timeout,
                s.sendgrid_sandbox, s.caps["sms"]) == (300, "EUR", 1.0, 5.0, True, "2/7d")


def test_a_command_names_the_variable_not_a_traceback(store: Path) -> None:
    path = write_event(store, __import__("datetime").datetime(2030, 1, 10, 19, 0).astimezone())
    result = run_promo("events", "check", str(path), env={"PROMO_QUIET_HOURS": "{bad"})
    assert result.code == 2, result
    assert "PROMO_QUIET_HOURS: not valid JSON" in result.err
    assert "Traceback" not in result.err


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(["PROMO_CAPS", "PROMO_QUIET_HOURS", "PROMO_RATE_LIMITS",
                             "PROMO_WAVES", "PROMO_PRICES", "PROMO_SEND_BATCH_SIZE",
                             "PROMO_SEND_TIMEOUT", "PROMO_PUBLIC_URL", "PROMO_EMAIL_FROM",
                             "PROMO_DEFAULT_LANGUAGE", "PROMO_" + "X" * 3]),
       value=JSONISH.map(lambda v: __import__("json").dumps(v)) | st.text(
           alphabet=string.printable, max_size=40))
def test_any_variable_value_loads_or_is_refused_by_name(store: Path, name: str,
                                                        value: str) -> None:
    with within(10), environment({name: value}):
        try:
            reset_settings()
        except UserError as exc:
            field = name.removeprefix("PROMO_").lower()
            assert name in str(exc) or field in str(exc), str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=200) | st.sampled_from([
    "caps = 5", "[waves]\nannounce = 3", "[waves.announce]\ndays_before = -1",
    "quiet_hours = {sms = '25:00-26:00'}", "send_batch_size = 1e400",
    "prices = {fax = 1}", "currency = 3", "[caps]\nsms = '1/0d'"]))
def test_any_promo_toml_loads_or_is_refused_naming_the_file_or_setting(store: Path,
                                                                      text: str) -> None:
    (store / "promo.toml").write_text(text, encoding="utf-8")
    with within(10), environment({}):
        try:
            reset_settings()
        except UserError as exc:
            assert "promo.toml" in str(exc), str(exc)
