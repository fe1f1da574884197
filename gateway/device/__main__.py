"""``python -m gateway.device``: the reference device agent (see :mod:`gateway.device.cli`)."""

import sys

from gateway.device.cli import main

sys.exit(main())
