"""``python -m edge_agent`` runs the CLI."""

import sys

from edge_agent.cli import main

sys.exit(main())
