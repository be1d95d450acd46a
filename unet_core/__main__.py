"""``python -m unet_core``: see :mod:`unet_core.cli`."""

import sys

from .cli import main

sys.exit(main())
