"""``python -m tests.bench``: every benchmark stage on one broker and database (suite.py)."""

import sys

from tests.bench.suite import main

sys.exit(main())
