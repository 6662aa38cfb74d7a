"""``python -m azprov``: the same entry point as the ``azprov`` console script."""

import sys

from azprov.cli import main

sys.exit(main())
