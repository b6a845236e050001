"""Waybill validation: which carrier a scanned code belongs to, or ``invalid``.

The table is an ordered list of rules, each a carrier id, a regex matched against the *whole*
code (``re.fullmatch``, ASCII digits only) and an optional check-digit scheme. The first rule
whose pattern matches and whose check digit holds wins. Sources: ``docs/protocols.md`` section 5
(patterns of two public validators; UPU S10; GS1 General Specifications for the SSCC)::

    sscc     (00)? + 18 digits, GS1 mod-10 check digit       069012340000000016
    ems      UPU S10: AA + 8 digits + check + AA, mod-11     RR473124829GB
    sf       SF + [A-Z0-9] + 12 digits                       SF1000000000000
    ...      (see DEFAULT_RULES)

Carriers change formats, so the default table is only a starting point: a site adds, overrides
or disables rules in the ``[waybills]`` section (:class:`WaybillConfig`). Rules from the config
are tried *before* the defaults. Where patterns overlap (STO ``43`` + 13 digits is also a Yunda
shape), table order decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from edge_agent.model import Ident, StrictModel

#: Carrier id given to a code that matched no rule (reserved: no rule may use it).
INVALID = "invalid"

CheckScheme = Literal["none", "upu_s10", "gs1_mod10"]
Role = Literal["waybill", "logistic"]

_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
_AIM_LEFTOVER = re.compile(r"\][A-Za-z][0-9A-Za-z]")


def gs1_check_digit(data: str) -> int:
    """GS1 mod-10 check digit of ``data`` (digits without the check digit).

    From the rightmost digit, weights 3, 1, 3, ...; check = (10 - sum mod 10) mod 10.
    ``gs1_check_digit("629104150021") == 3``.
    """
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data)))
    return (10 - total % 10) % 10


def s10_check_digit(serial: str) -> int:
    """UPU S10 check digit of the 8 serial digits: weights 8,6,4,2,3,5,9,7, mod 11.

    c = 11 - (sum mod 11); 10 becomes 0 and 11 becomes 5. ``s10_check_digit("47312482") == 9``.
    """
    if len(serial) != len(_S10_WEIGHTS):
        msg = f"S10 serial must have 8 digits, got {serial!r}"
        raise ValueError(msg)
    c = 11 - sum(int(d) * w for d, w in zip(serial, _S10_WEIGHTS, strict=True)) % 11
    return {10: 0, 11: 5}.get(c, c)


def check_digit_ok(scheme: CheckScheme, digits: str) -> bool:
    """Whether ``digits`` (data + check digit, as the rule's ``check`` group) pass ``scheme``."""
    if scheme == "none":
        return True
    if not digits.isascii() or not digits.isdigit() or len(digits) < 2:
        return False
    if scheme == "upu_s10":
        return len(digits) == 9 and s10_check_digit(digits[:8]) == int(digits[8])
    return gs1_check_digit(digits[:-1]) == int(digits[-1])


class WaybillRule(StrictModel):
    """One pattern of one carrier.

    Args:
        carrier: carrier id reported for matching codes ("sf", "zto" ...; not "invalid").
        pattern: Python regex matched against the whole code, ASCII-only ``\\d``. With a check
            scheme, a named group ``check`` selects the digits checked (data + check digit);
            without one, the whole code is checked.
        check: check-digit scheme: "none", "upu_s10" (mod 11) or "gs1_mod10".
        role: "waybill" (a carrier's waybill) or "logistic" (e.g. a GS1 SSCC): a parcel's
            waybill is chosen among waybills first, logistic codes only when no waybill was read.
    """

    carrier: Ident
    pattern: Annotated[str, Field(min_length=1, max_length=500)]
    check: CheckScheme = "none"
    role: Role = "waybill"

    @field_validator("carrier")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v == INVALID:
            msg = f"'{INVALID}' is reserved for codes that match no rule"
            raise ValueError(msg)
        return v

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v, re.ASCII)
        except re.error as err:
            msg = f"a valid regular expression ({err})"
            raise ValueError(msg) from err
        return v


#: The built-in table (docs/protocols.md section 5.2 pattern A, plus S10 and SSCC), in match order.
DEFAULT_RULES: tuple[WaybillRule, ...] = (
    WaybillRule(carrier="sscc", pattern=r"^(?:00)?(?P<check>\d{18})$", check="gs1_mod10",
                role="logistic"),
    WaybillRule(carrier="ems", pattern=r"^[A-Z]{2}(?P<check>\d{9})[A-Z]{2}$", check="upu_s10"),
    WaybillRule(carrier="sf", pattern=r"^SF[A-Z0-9]\d{12}$"),
    WaybillRule(carrier="yto", pattern=r"^YT\d{13}$"),
    WaybillRule(carrier="jt", pattern=r"^JT\d{13}$"),
    WaybillRule(carrier="jd", pattern=r"^JD[A-Z0-9]{2}\d{11}$"),
    WaybillRule(carrier="deppon", pattern=r"^DPK\d{12}$"),
    WaybillRule(carrier="cainiao", pattern=r"^621\d{12}$"),
    WaybillRule(carrier="zto", pattern=r"^7[3-68]\d{12}$"),
    WaybillRule(carrier="sto", pattern=r"^(?:77|43)\d{12,15}$"),
    WaybillRule(carrier="yunda", pattern=r"^[34]\d{14}$|^5\d{12}$"),
    WaybillRule(carrier="ems", pattern=r"^[981]\d{12}$|^P[A-Z]\d{11}$"),
)  # fmt: skip

#: Carrier ids of the default table.
DEFAULT_CARRIERS: frozenset[str] = frozenset(r.carrier for r in DEFAULT_RULES)


class WaybillConfig(StrictModel):
    """The ``[waybills]`` section: site rules, tried before the (optionally disabled) defaults.

    Args:
        defaults: whether the built-in table (:data:`DEFAULT_RULES`) is used after ``rules``.
        disable: carriers of the built-in table to leave out (e.g. ``["deppon"]``).
        rules: the site's own rules, in match order (``[[waybills.rules]]``).
    """

    defaults: bool = True
    disable: list[Ident] = Field(default_factory=list)
    rules: list[WaybillRule] = Field(default_factory=list, validate_default=True)

    @field_validator("disable")
    @classmethod
    def _built_in(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - DEFAULT_CARRIERS)
        if unknown:
            msg = f"built-in carriers ({', '.join(sorted(DEFAULT_CARRIERS))}); not: {unknown}"
            raise ValueError(msg)
        return v

    @field_validator("rules")
    @classmethod
    def _some_rule(cls, v: list[WaybillRule], info: ValidationInfo) -> list[WaybillRule]:
        if not v and info.data.get("defaults") is False:
            msg = "at least one rule when defaults = false"
            raise ValueError(msg)
        return v

    def effective_rules(self) -> tuple[WaybillRule, ...]:
        """Site rules followed by the enabled default rules."""
        base = [r for r in DEFAULT_RULES if r.carrier not in self.disable] if self.defaults else []
        return (*self.rules, *base)


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """What the table says about one code.

    Attributes:
        code: the code text as read.
        carrier: the carrier id, or ``"invalid"``.
        role: "waybill" or "logistic" for valid codes; None when invalid.
        check: the check-digit scheme that was verified ("none" when invalid).
        reason: why the code is invalid: "empty", "bad_characters", "aim_leftover",
            "check_digit", "carrier_not_accepted" or "no_pattern"; None when valid.
        matched: for "check_digit"/"carrier_not_accepted", the carrier whose pattern matched.
    """

    code: str
    carrier: str
    role: Role | None = None
    check: CheckScheme = "none"
    reason: str | None = None
    matched: str | None = None

    @property
    def valid(self) -> bool:
        """Whether the code belongs to a carrier."""
        return self.carrier != INVALID


class WaybillTable:
    """An ordered, compiled rule table.

    Args:
        rules: rules in match order; the first match with a valid check digit wins.
    """

    def __init__(self, rules: tuple[WaybillRule, ...] = DEFAULT_RULES) -> None:
        self.rules = rules
        self._compiled = [(r, re.compile(r.pattern, re.ASCII)) for r in rules]

    @classmethod
    def from_config(cls, cfg: WaybillConfig) -> WaybillTable:
        """The table a ``[waybills]`` section describes."""
        return cls(cfg.effective_rules())

    @property
    def carriers(self) -> frozenset[str]:
        """Every carrier id the table can report."""
        return frozenset(r.carrier for r in self.rules)

    def classify(self, code: str, carriers: frozenset[str] | None = None) -> CodeCheck:
        """The carrier of ``code``, or ``invalid`` with a reason.

        Args:
            code: the code text (no AIM prefix, no framing).
            carriers: carriers accepted here; None accepts all. A code that only matches
                other carriers is invalid with reason "carrier_not_accepted".
        """
        early = _lexical_reason(code)
        if early is not None:
            return _invalid(code, early)
        failure: CodeCheck | None = None
        for rule, rx in self._compiled:
            m = rx.fullmatch(code)
            if m is None:
                continue
            digits = m.groupdict().get("check") or code
            if not check_digit_ok(rule.check, digits):
                failure = failure or _invalid(code, "check_digit", rule.carrier)
            elif carriers is not None and rule.carrier not in carriers:
                failure = failure or _invalid(code, "carrier_not_accepted", rule.carrier)
            else:
                return CodeCheck(code, rule.carrier, role=rule.role, check=rule.check)
        return failure or _invalid(code, "no_pattern")


def _invalid(code: str, reason: str, matched: str | None = None) -> CodeCheck:
    return CodeCheck(code, INVALID, reason=reason, matched=matched)


def _lexical_reason(code: str) -> str | None:
    """Reject what no waybill can contain: nothing, control/non-ASCII/space, AIM leftovers."""
    if not code:
        return "empty"
    if any(not ("!" <= ch <= "~") for ch in code):
        return "bad_characters"
    if _AIM_LEFTOVER.match(code):
        return "aim_leftover"
    return None
