"""Pieces every driver family uses: framers (``framing``), AIM symbology ids (``aim``) and the
serial port link with its config fields (``serial_link``)."""
