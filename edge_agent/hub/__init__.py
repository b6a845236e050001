"""The hub: the backend half of edge-agent's promise (docs/hub.md).

``edge-agent hub run`` subscribes to every agent's topics (an MQTT 5 shared subscription, so
several instances split the load), writes readings, parcel events, exceptions, KPIs, alarms,
device states and agent births into PostgreSQL idempotently and in batches, acknowledges each
message only after its transaction committed, tracks every (agent, device) ``seq`` stream for
gaps and asks agents to ``resend`` them, and shows the fleet (``edge-agent hub status``).
"""
