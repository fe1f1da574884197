"""``python -m gateway.agent``: the reference device agent (see :mod:`gateway.agent.cli`)."""

import sys

from gateway.agent.cli import main

sys.exit(main())
