"""`python -m scratchnst` does what the `scratchnst` command does."""

import sys

from scratchnst.cli import main

sys.exit(main())
