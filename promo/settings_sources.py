"""Where the settings come from, read strictly: promo.toml (or the file PROMO_CONFIG names)
with errors that name the file, and the PROMO_* variables, each of which must set something.
Apart from `promo.settings` (the fields and their checks) to keep each short."""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, TomlConfigSettingsSource

from promo.errors import UserError

# PROMO_* variables that are not settings but are read by the command line
ENV_NOT_SETTINGS = ("PROMO_CONFIG", "PROMO_DEBUG")


def config_path() -> Path:
    """promo.toml, or the file PROMO_CONFIG names (which then must exist)."""
    named = os.environ.get("PROMO_CONFIG")
    if named is None:
        path = Path("promo.toml")
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: a folder, not a settings file")
        return path
    path = Path(named)
    if not path.is_file():
        what = "a folder, not a settings file" if path.is_dir() else "no such file"
        raise UserError(f"PROMO_CONFIG={named}: {what}")
    return path


class TomlFile(TomlConfigSettingsSource):
    """promo.toml read with errors that name the file (and the line when TOML gives one)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            text = Path(file_path).read_bytes().decode("utf-8")
        except OSError as exc:
            raise UserError(f"{file_path}: cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{file_path}: not UTF-8 text (byte {exc.start}); TOML files are "
                            f"UTF-8") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{file_path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise UserError(f"{file_path}: nested too deep to be settings") from None


def _env_field(settings_cls: type[BaseSettings], name: str) -> str | None:
    """The setting a PROMO_* variable sets (PROMO_CAPS__SMS sets caps), or None."""
    key = name.removeprefix("PROMO_").lower().split("__")[0]
    return key if key in settings_cls.model_fields else None


def check_environment(settings_cls: type[BaseSettings]) -> None:
    """Refuse PROMO_* variables that set nothing (a misspelt PROMO_SENDGRID_KEY would leave
    email in the outbox without a word), and JSON values that do not parse, by name."""
    fields = settings_cls.model_fields
    known = [f"PROMO_{f.upper()}" for f in fields] + list(ENV_NOT_SETTINGS)
    problems = []
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith("PROMO_") or name.upper() in ENV_NOT_SETTINGS:
            continue
        field = _env_field(settings_cls, name.upper())
        if field is None:
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name}: not a setting{hint}")
            continue
        if "__" in name:
            continue
        annotation = str(fields[field].annotation)
        if annotation.startswith(("dict", "list")):
            try:
                json.loads(value)
            except ValueError as exc:
                problems.append(f"{name}: not valid JSON ({exc}); like {name}="
                                + ("'{\"sms\": \"2/7d\"}'" if field == "caps" else "'{...}'"))
            except RecursionError:
                problems.append(f"{name}: nested too deep")
    if problems:
        raise UserError("invalid settings in the environment:\n"
                        + "\n".join(f"  {p}" for p in problems))
