"""`python -m transports.stdio_bridge`: the stdio wrapper's command line."""

from __future__ import annotations

import sys

from transports.stdio_bridge.cli import main

sys.exit(main())
