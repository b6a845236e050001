"""Pieces every driver family uses: framers (``framing``), AIM symbology ids (``aim``) and the
one link every byte-stream device uses (``link``: serial nodes via ``tty``, TCP via ``tcp``) and
the read loop on it (``stream``)."""
