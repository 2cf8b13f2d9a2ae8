"""``python -m saverkit``: the command-line tool (see saverkit.cli)."""

import sys

from saverkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
