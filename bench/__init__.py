"""Benchmarks of edge-agent against the obvious alternative, measured side by side (issue 7).

``python -m bench`` (or ``bench/run``) runs everything against one private Mosquitto on
loopback and writes ``bench/results/`` (JSON, a markdown table and a PNG chart). See
``bench/README.md``.
"""
