"""``python -m adaptive_pool`` runs the ``adaptive-pool`` command."""

import sys

from .cli import main

sys.exit(main())
