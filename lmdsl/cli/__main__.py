"""`python -m lmdsl.cli`: the `lmdsl` command."""

import sys

from lmdsl.cli import main

sys.exit(main())
