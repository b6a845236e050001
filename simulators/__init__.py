"""Device simulators: the same bytes as the real devices, over real ptys and sockets.

Each ``simulators/<driver>.py`` mirrors ``drivers/<driver>.py`` and is runnable by hand
(``python -m simulators.<driver> --help``); it prints the port it serves.
"""
