"""USB HID handheld barcode scanner read through pyusb (registry key ``hid_scanner``).

The driver is a package because it has four separable parts, each a module:

* :mod:`drivers.hid_scanner.config`: ``HidScannerConfig``, every setting and its source;
* :mod:`drivers.hid_scanner.framer`: reports -> code frames (pure state machines over bytes);
* :mod:`drivers.hid_scanner.parser`: one code frame -> ``Decoded`` (pure function of bytes);
* :mod:`drivers.hid_scanner.usbio`: finding, claiming and error translation over pyusb, and the
  documented ``EDGE_AGENT_USB_BACKEND`` hook that lets the simulator stand in for libusb;
* :mod:`drivers.hid_scanner.driver`: ``HidScannerDriver``, the class the registry names.

Wire formats (``docs/protocols.md`` §2.1-2.3, §2.5, §2.6) are documented in the framer and
parser modules. Nothing here is imported until a configured device uses it.
"""
