"""`python -m ferrolm`: the command line, where the `ferrolm` script is not on PATH."""

import sys

from ferrolm.cli import main

if __name__ == "__main__":
    sys.exit(main())
