"""``python -m igr``: the ``igr`` command line, for environments without the console script on PATH."""

import sys

from igr.cli import main

if __name__ == "__main__":
    sys.exit(main())
