"""`python -m littlebaby` is the `baby` command."""

import sys

from littlebaby.cli import main

sys.exit(main())
