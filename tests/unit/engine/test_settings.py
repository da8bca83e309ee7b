"""CITADEL_* settings: every value parsed or refused with one line of cause and one of remedy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine.settings import MIN_HEAP, Settings, format_size, parse_settings, parse_size
from citadel.errors import UsageError


def test_defaults_when_nothing_is_set() -> None:
    assert parse_settings({}) == Settings()
    parsed = parse_settings({})
    assert (parsed.mode, parsed.heap, parsed.stack, parsed.allow_dlopen, parsed.log) == ("auto", None, None, False,
                                                                                         "warning")


@pytest.mark.parametrize("text, expected", [
    ("256M", 256 << 20), ("1G", 1 << 30), ("512k", 512 << 10), ("65536", 65536), (" 64M ", 64 << 20),
    ("2GB", 2 << 30), ("2GiB", 2 << 30), ("1T", 1 << 40),
])
def test_sizes_with_suffixes(text: str, expected: int) -> None:
    assert parse_size("CITADEL_HEAP", text) == expected


@pytest.mark.parametrize("text", ["12X", "", "M", "1.5G", "-1M", "0x10", "１２M", "12 M B", "64B"])
def test_bad_size_names_the_variable_and_shows_an_example(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_size("CITADEL_HEAP", text)
    assert caught.value.cause == f"CITADEL_HEAP={text!r} is not a size"
    assert caught.value.remedy == "use a number with K, M or G, e.g. CITADEL_HEAP=256M"


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=1 << 50))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size("CITADEL_HEAP", format_size(size)) == size


def test_heap_below_the_minimum_is_refused() -> None:
    with pytest.raises(UsageError) as caught:
        parse_settings({"CITADEL_HEAP": "8M"})
    assert "too small" in caught.value.cause
    assert parse_settings({"CITADEL_HEAP": format_size(MIN_HEAP)}).heap == MIN_HEAP


@pytest.mark.parametrize("name, value, fragment", [
    ("CITADEL_MODE", "fast", "is not a mode"),
    ("CITADEL_LOG", "loud", "is not a log level"),
    ("CITADEL_STACK", "16K", "outside 64K..1G"),
    ("CITADEL_STACK", "2G", "outside 64K..1G"),
    ("CITADEL_ALLOW_DLOPEN", "2", "is not a yes/no value"),
    ("CITADEL_VERSION", "maybe", "is not a yes/no value"),
    ("CITADEL_TEE_ROOT", "relative/dir", "is not an absolute path"),
])
def test_each_bad_setting_is_one_clear_error(name: str, value: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_settings({name: value})
    assert name in caught.value.cause and fragment in caught.value.cause
    assert caught.value.remedy
    assert "\n" not in caught.value.cause + caught.value.remedy


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), ("TRUE", True), ("on", True),
                                             ("0", False), ("no", False), ("", False), ("off", False)])
def test_yes_no_values(value: str, expected: bool) -> None:
    assert parse_settings({"CITADEL_ALLOW_DLOPEN": value}).allow_dlopen is expected


def test_modes_are_case_insensitive_and_unknown_variables_are_reported() -> None:
    parsed = parse_settings({"CITADEL_MODE": "HW", "CITADEL_HEAPS": "1G", "OTHER": "x"})
    assert parsed.mode == "hw"
    assert parsed.unknown == ("CITADEL_HEAPS",)


def test_describe_shows_each_setting_as_written() -> None:
    described = parse_settings({"CITADEL_HEAP": "268435456", "CITADEL_ALLOW_DLOPEN": "1"}).describe()
    assert described["CITADEL_HEAP"] == "256M"
    assert described["CITADEL_STACK"] == "default"
    assert described["CITADEL_ALLOW_DLOPEN"].startswith("1 ")
