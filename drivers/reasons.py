"""Reject reasons: the closed set of keys of ``Driver.rejects`` and of published reject events.

Every reason a framer, a parser or the base class gives is a member here; each driver declares
the ones it can produce (``Driver.REJECTS``), and ``docs/drivers.md`` lists them per driver
(``tests/drivers/test_reasons.py`` checks the table against the declarations). A reason outside
a driver's set is a bug in that driver: the base class counts it as ``parser_error`` and logs it.

The values are the strings published and logged since before the enum existed: never rename
one (dashboards and the fault tests key on them).
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a frame (or a run of bytes) did not become a reading."""

    # ---- the base class, for every driver (drivers/base.py) ----
    BAD_CODE = "bad_code"  # code too long or not printable after parsing (D16)
    NOT_FINITE = "not_finite"  # weight NaN or infinite
    PARSER_ERROR = "parser_error"  # a parser raised something but FrameError (a bug)
    # ---- framers (drivers/common/framing.py and the drivers' own) ----
    NOISE = "noise"  # bytes between frames
    PARTIAL = "partial"  # a frame cut off by the inter-byte timeout or a new start
    OVERSIZE = "oversize"  # a frame longer than max_frame
    # ---- scanners ----
    GARBLED = "garbled"  # bytes that do not parse: control bytes, bad UTF-8, bad header
    EMPTY = "empty"  # a frame with no code data
    BAD_PREFIX = "bad_prefix"
    BAD_SUFFIX = "bad_suffix"
    BAD_AIM = "bad_aim"  # AIM symbology id missing or unknown
    CHECKSUM = "checksum"
    COUNT_MISMATCH = "count_mismatch"  # code count field disagrees with the codes sent
    DUPLICATE = "duplicate"  # the device repeated a recent telegram
    # ---- USB HID ----
    BAD_LENGTH = "bad_length"
    BAD_REPORT_ID = "bad_report_id"
    MISSING_CONTINUATION = "missing_continuation"
    ROLLOVER = "rollover"
    UNKNOWN_KEY = "unknown_key"
    # ---- scales ----
    MALFORMED = "malformed"
    UNIT = "unit"  # unknown weight unit
    OUT_OF_RANGE = "out_of_range"
    OVER_CAPACITY = "over_capacity"
    UNDER_RANGE = "under_range"
    NOT_ZEROED = "not_zeroed"
    NOT_WEIGHT = "not_weight"
    NO_WEIGHT = "no_weight"
    NO_REPLY = "no_reply"
    UNEXPECTED = "unexpected"
    UNKNOWN_COMMAND = "unknown_command"
    NOT_EXECUTABLE = "not_executable"
    SYNTAX_ERROR = "syntax_error"
    TRANSMISSION_ERROR = "transmission_error"
    LOGICAL_ERROR = "logical_error"
    ZERO_ERROR = "zero_error"
    TARE_ERROR = "tare_error"
    NOT_DISPLAYED = "not_displayed"
    # ---- Modbus ----
    CRC = "crc"
    LENGTH = "length"
    SHORT = "short"
    WRONG_UNIT = "wrong_unit"
    PROTOCOL_ID = "protocol_id"
    FUNCTION = "function"
    OVERLOAD = "overload"
    UNDER_ZERO = "under_zero"
    BAD_DECIMALS = "bad_decimals"
    ILLEGAL_FUNCTION = "illegal_function"
    ILLEGAL_ADDRESS = "illegal_address"
    ILLEGAL_VALUE = "illegal_value"
    DEVICE_FAILURE = "device_failure"
    ACKNOWLEDGE = "acknowledge"
    DEVICE_BUSY = "device_busy"
    MEMORY_PARITY_ERROR = "memory_parity_error"
    GATEWAY_PATH_UNAVAILABLE = "gateway_path_unavailable"
    GATEWAY_NO_RESPONSE = "gateway_no_response"
    EXCEPTION_OTHER = "exception_other"  # a non-standard exception code (kept in the detail)


R = RejectReason

#: What the base class itself may reject for any driver (drivers/base.py).
BASE: frozenset[RejectReason] = frozenset({R.BAD_CODE, R.NOT_FINITE, R.PARSER_ERROR})
#: What :class:`~drivers.common.framing.Framer` produces: every byte-stream driver has these.
FRAMING: frozenset[RejectReason] = frozenset({R.NOISE, R.PARTIAL, R.OVERSIZE})
