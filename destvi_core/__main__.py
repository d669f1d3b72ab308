"""``python -m destvi_core``: see :mod:`destvi_core.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
