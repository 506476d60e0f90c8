"""conventions.js holds the same names as conventions.py: the browser and Python sides cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

from jobtrail import conventions

CONVENTIONS_JS = Path(__file__).resolve().parents[2] / "instrumentation" / "browser" / "src" / "conventions.js"
STRING_CONSTANT = re.compile(r"^export const (\w+) = '([^']*)';$", re.MULTILINE)
LIST_CONSTANT = re.compile(r"^export const (\w+) = \[([^\]]*)\];$", re.MULTILINE)


def js_constants() -> dict[str, object]:
    source = CONVENTIONS_JS.read_text()
    constants: dict[str, object] = dict(STRING_CONSTANT.findall(source))
    for name, items in LIST_CONSTANT.findall(source):
        constants[name] = frozenset(constants[item.strip()] for item in items.split(",") if item.strip())
    return constants


def test_every_js_name_has_the_python_value():
    constants = js_constants()
    assert len(constants) > 10
    for name, value in constants.items():
        assert getattr(conventions, name) == value, name


def test_no_js_telemetry_string_outside_conventions_js():
    values = {value for value in js_constants().values() if isinstance(value, str) and "." in value}
    for source in CONVENTIONS_JS.parent.glob("*.js"):
        if source != CONVENTIONS_JS:
            text = source.read_text()
            assert not [value for value in values if value in text], source.name
