"""``HidScannerConfig``: the ``[devices.<id>]`` table of a ``type = "hid_scanner"`` device.

Items marked [U] in ``docs/protocols.md`` (not confirmed on the site's scanners) are settings
here rather than constants, so a scanner that differs needs a config change, not a code change.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.model import DeviceConfig

#: Keys that end a code in keyboard mode: Enter (0x28) and keypad Enter (0x58), or Tab (0x2B).
TERMINATOR_KEYS: dict[str, frozenset[int]] = {
    "enter": frozenset({0x28, 0x58}),
    "tab": frozenset({0x2B}),
}


class HidScannerConfig(DeviceConfig):
    """``type = "hid_scanner"``.

    Args:
        vid: USB vendor id (TOML hex literal, e.g. ``0x0c2e``).
        pid: USB product id.
        serial: iSerialNumber string; tells two scanners with the same VID:PID apart.
        mode: ``keyboard`` (boot keyboard wedge, §2.2) or ``pos`` (HID POS, usage page 0x8C, §2.3).
        interface: bInterfaceNumber of the HID interface to claim.
        read_timeout_ms: longest single interrupt read, 100-500 ms (docs/reliability.md U4: a
            timeout of 0 blocks forever and cannot be stopped).
        max_code_len: longest code accepted, in characters.
        layout: keyboard layout the scanner types in; only ``us`` (AIM ``]`` is 0x30 only there).
        terminator: key ending a code in keyboard mode ([S] Datalogic default "ENTER").
        aim_ids: keyboard mode only: the scanner prefixes each code with its ``]cm`` AIM id.
        key_timeout_ms: keyboard mode: a code whose terminator has not come this long after its
            last report is rejected as ``partial`` ([U] scanner inter-character delay 0-10 ms).
        pos_report_id: HID POS input report id carrying scans ([S] 0x02, Honeywell).
        pos_continuation_timeout_ms: HID POS: a message whose last packet (byte 63 == 0) has not
            come this long after the previous packet is rejected as ``missing_continuation``
            ([U] packets of one message come back to back, one per bInterval).
        pos_strip_cr: HID POS: drop a trailing CR / CR LF suffix from the data ([U]: main.js
            reads one byte less than the length byte says, as if a suffix were included).
        pos_enable_report: HID POS: send feature report 0xFE = [0x01] on open to switch a
            Honeywell scanner to HID POS ([S] WebHidBarcodeScanner main.js does it for 0x0c2e).
        noread: code texts that mean "no read" (e.g. Honeywell ``NR``, off by default).
    """

    type: Literal["hid_scanner"]
    vid: int = Field(ge=0, le=0xFFFF)
    pid: int = Field(ge=0, le=0xFFFF)
    serial: str | None = Field(default=None, min_length=1)
    mode: Literal["keyboard", "pos"] = "keyboard"
    interface: int = Field(default=0, ge=0, le=255)
    read_timeout_ms: int = Field(default=200, ge=100, le=500)
    max_code_len: int = Field(default=512, ge=8, le=8192)
    layout: Literal["us"] = "us"
    terminator: Literal["enter", "tab"] = "enter"
    aim_ids: bool = False
    key_timeout_ms: int = Field(default=300, ge=10, le=10_000)
    pos_report_id: int = Field(default=0x02, ge=1, le=255)
    pos_continuation_timeout_ms: int = Field(default=50, ge=5, le=5_000)
    pos_strip_cr: bool = True
    pos_enable_report: bool = False
    noread: list[str] = Field(default_factory=list)

    @property
    def where(self) -> str:
        """``vid:pid[/serial]`` as lsusb prints it, for log lines and error messages."""
        ident = f"{self.vid:04x}:{self.pid:04x}"
        return f"{ident}/{self.serial}" if self.serial else ident
