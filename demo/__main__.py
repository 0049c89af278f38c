"""`python -m demo run` (make demo) and `python -m demo down` (make demo-down)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
