"""``python -m verinet``."""

import sys

from verinet.cli import main

sys.exit(main())
