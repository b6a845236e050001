"""edge-agent: sorting-line scanners and scales to MQTT, store-and-forward, no reading lost."""

__version__ = "0.1.0"
