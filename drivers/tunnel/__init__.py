"""What the fixed tunnel scanner drivers share (SICK CLV/Lector, Cognex DataMan, Datalogic).

``base.py`` holds the transport (serial or ``socket://`` via pyserial, with the socket close
workaround) and the read loop; ``config.py`` the settings common to every tunnel scanner.
"""
