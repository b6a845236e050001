"""Waybill validation: docs/protocols.md section 5 examples, check digits, site rules,
properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.waybill import (
    DEFAULT_CARRIERS,
    INVALID,
    WaybillConfig,
    WaybillTable,
    gs1_check_digit,
    s10_check_digit,
)
from simulators.line.codes import CARRIERS, invalid_code, waybill

TABLE = WaybillTable()

#: "Example for tests" column of docs/protocols.md section 5.2, plus 5.3's SSCC and an S10.
EXAMPLES = [
    ("SF1000000000000", "sf"),
    ("75312345678901", "zto"),
    ("YT1234567890123", "yto"),
    ("773165231258960", "sto"),
    ("462598779470531", "yunda"),
    ("JT0006968326954", "jt"),
    ("JDVA11408814483", "jd"),
    ("1240921381750", "ems"),
    ("621123456789012", "cainiao"),
    ("DPK364112047425", "deppon"),
    ("069012340000000016", "sscc"),
    ("00069012340000000016", "sscc"),
    ("RR473124829GB", "ems"),
]


@pytest.mark.parametrize(("code", "carrier"), EXAMPLES)
def test_protocols_examples_are_valid_with_their_carrier(code: str, carrier: str) -> None:
    got = TABLE.classify(code)
    assert (got.carrier, got.valid, got.reason) == (carrier, True, None)


def test_every_default_carrier_has_an_example() -> None:
    assert {c for _, c in EXAMPLES} == DEFAULT_CARRIERS


def test_gs1_worked_example_and_sscc_check_digit() -> None:
    assert gs1_check_digit("629104150021") == 3
    assert gs1_check_digit("06901234000000001") == 6
    got = TABLE.classify("069012340000000016")
    assert (got.check, got.role) == ("gs1_mod10", "logistic")


@pytest.mark.parametrize("wrong", [d for d in "0123456789" if d != "6"])
def test_sscc_with_any_other_check_digit_is_invalid(wrong: str) -> None:
    for code in (f"06901234000000001{wrong}", f"0006901234000000001{wrong}"):
        got = TABLE.classify(code)
        assert (got.carrier, got.reason, got.matched) == (INVALID, "check_digit", "sscc")


def test_s10_check_digit_including_the_10_and_11_cases() -> None:
    assert s10_check_digit("47312482") == 9  # RR 473 124 829 GB
    assert s10_check_digit("12345678") == 5  # 204 mod 11 = 6, 11 - 6 = 5
    assert s10_check_digit("00000008") == 0  # 56 mod 11 = 1: c = 10 -> 0
    assert s10_check_digit("00000000") == 5  # sum 0: c = 11 -> 5
    assert TABLE.classify("EA000000080CN").carrier == "ems"
    assert TABLE.classify("EA000000005CN").carrier == "ems"
    bad = TABLE.classify("RR473124828GB")
    assert (bad.carrier, bad.reason, bad.matched) == (INVALID, "check_digit", "ems")
    with pytest.raises(ValueError, match="8 digits"):
        s10_check_digit("1234567")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("", "empty"),
        ("sf1000000000000", "no_pattern"),  # lower case
        ("SF1000000000000\n", "bad_characters"),  # '$' would match before a newline
        ("SF 1000000000000", "bad_characters"),
        ("SF100000000000\x1d", "bad_characters"),
        ("\uff175312345678901", "bad_characters"),  # full-width 7: \d must be ASCII only
        ("]C0SF1000000000000", "aim_leftover"),
        ("SF100000000000", "no_pattern"),  # one digit short
        ("YT12345678901234", "no_pattern"),  # one digit long
        ("NoRead", "no_pattern"),
    ],
)
def test_lexical_and_pattern_rejects(code: str, reason: str) -> None:
    got = TABLE.classify(code)
    assert (got.carrier, got.valid, got.reason) == (INVALID, False, reason)


def test_overlapping_patterns_follow_table_order() -> None:
    # STO's 43 + 13 digits is also a Yunda shape; STO comes first (docs/protocols.md table order).
    assert TABLE.classify("431234567890123").carrier == "sto"
    assert TABLE.classify("461234567890123").carrier == "yunda"


def test_carriers_filter_makes_other_carriers_invalid() -> None:
    got = TABLE.classify("SF1000000000000", frozenset({"zto"}))
    assert (got.carrier, got.reason, got.matched) == (INVALID, "carrier_not_accepted", "sf")
    assert TABLE.classify("75312345678901", frozenset({"zto"})).carrier == "zto"


def test_site_rules_come_before_defaults_and_defaults_can_be_disabled() -> None:
    cfg = WaybillConfig.model_validate(
        {
            "disable": ["deppon"],
            "rules": [
                {"carrier": "sf", "pattern": r"^\d{12}$"},  # older SF: 12 digits
                {"carrier": "hub", "pattern": r"^HUB(?P<check>\d{8})$", "check": "gs1_mod10"},
            ],
        }
    )
    table = WaybillTable.from_config(cfg)
    assert table.classify("123456789012").carrier == "sf"
    assert table.classify("DPK364112047425").reason == "no_pattern"
    assert table.classify("SF1000000000000").carrier == "sf"
    data = "1234567"
    assert table.classify(f"HUB{data}{gs1_check_digit(data)}").carrier == "hub"
    assert table.classify(f"HUB{data}{(gs1_check_digit(data) + 1) % 10}").reason == "check_digit"
    assert "deppon" not in table.carriers and "hub" in table.carriers


def test_defaults_off_uses_only_site_rules() -> None:
    cfg = WaybillConfig.model_validate(
        {"defaults": False, "rules": [{"carrier": "sf", "pattern": r"^SF\d{13}$"}]}
    )
    table = WaybillTable.from_config(cfg)
    assert table.carriers == frozenset({"sf"})
    assert table.classify("YT1234567890123").carrier == INVALID


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"rules": [{"carrier": "x", "pattern": "(unclosed"}]}, "valid regular expression"),
        ({"rules": [{"carrier": "invalid", "pattern": "x"}]}, "reserved"),
        ({"rules": [{"carrier": "a/b", "pattern": "x"}]}, "pattern"),
        ({"disable": ["dhl"]}, "not: ['dhl']"),
        ({"defaults": False}, "at least one rule when defaults = false"),
        ({"rule": []}, "Extra inputs"),
        ({"rules": [{"carrier": "x", "pattern": "x", "check": "luhn"}]}, "upu_s10"),
    ],
)
def test_waybill_config_errors(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        WaybillConfig.model_validate(data)
    assert needle in str(err.value)


@pytest.mark.parametrize("carrier", range(len(CARRIERS)))
def test_simulator_waybills_match_their_carrier(carrier: int) -> None:
    for n in (0, 7, 12_345, 99_999_999):
        assert TABLE.classify(waybill(carrier, n)).carrier == CARRIERS[carrier]


@pytest.mark.parametrize("kind", range(4))
def test_simulator_invalid_codes_are_invalid_for_the_stated_reason(kind: int) -> None:
    for n in (0, 7, 12_345, 99_999_999):
        code, reason = invalid_code(kind, n)
        assert TABLE.classify(code).reason == reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_classify_never_raises(text: str) -> None:
    got = TABLE.classify(text)
    assert got.valid == (got.carrier != INVALID)
    assert (got.reason is None) == got.valid


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\A[0-9]{17}\Z"), st.integers(1, 9))
def test_sscc_valid_exactly_with_its_check_digit(data: str, off: int) -> None:
    good = data + str(gs1_check_digit(data))
    bad = data + str((gs1_check_digit(data) + off) % 10)
    assert TABLE.classify("00" + good).carrier == "sscc"
    assert TABLE.classify("00" + bad).reason == "check_digit"


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\A[A-Z]{2}\Z"), st.from_regex(r"\A[0-9]{8}\Z"), st.integers(1, 9))
def test_s10_valid_exactly_with_its_check_digit(letters: str, serial: str, off: int) -> None:
    c = s10_check_digit(serial)
    assert TABLE.classify(f"{letters}{serial}{c}CN").carrier == "ems"
    assert TABLE.classify(f"{letters}{serial}{(c + off) % 10}CN").reason == "check_digit"
