"""``python -m deepexplain``: the command line of :mod:`deepexplain.cli` (also installed as ``deepexplain``)."""

import sys

from deepexplain.cli import main

if __name__ == "__main__":
    sys.exit(main())
