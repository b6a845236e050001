"""``python -m simulators.sick_clv``: run a simulated SICK CLV/Lector (see the package doc)."""

import sys

from simulators.sick_clv import main

sys.exit(main())
