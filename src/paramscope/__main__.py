"""``python -m paramscope``: the same CLI as the ``paramscope`` command."""

import sys

from paramscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
