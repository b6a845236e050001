"""What the fixed tunnel scanner drivers share (SICK CLV/Lector, Cognex DataMan, Datalogic).

``base.py`` holds the duplicate check on top of :mod:`drivers.common.stream` (the port and the
read loop); ``config.py`` the settings and field checks common to every tunnel scanner.
"""
