"""Remote operations: the backend's commands over MQTT (docs/backend.md "Remote commands").

* :mod:`.protocol`: a request (``command.v1``) parsed and checked, a response (``response.v1``)
  built; where the response goes (only under ``{base}/response/``).
* :mod:`.ratelimit`: the token bucket that bounds commands per second.
* :mod:`.resend`: which retained rows a ``resend`` re-publishes and which part of the range is
  gone (purged, refused at the queue bound, never existed), read on its own read-only connection.
* :mod:`.feed`: the publisher seams the command side uses, and the resend lane's feeder.
* :mod:`.server`: the command thread (never the publisher's or the writer's) and the handlers.
* :mod:`.unsent`: the ``oldest_unsent`` alarm; :mod:`.wiring`: what the daemon attaches.
"""
