"""`python -m bridge` runs the stembridge CLI."""

import sys

from bridge.cli import main

sys.exit(main())
