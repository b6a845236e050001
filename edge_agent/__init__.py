"""edge-agent: scanners and scales on a sorting line to MQTT, store-and-forward, never losing a reading."""

__version__ = "0.1.0"
