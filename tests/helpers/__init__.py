"""Helpers shared by the tests (and the benchmarks): servers, the CLI, campaigns, flows, signing.

Fixtures live in `tests/conftest.py`; everything else the test modules share is imported from here.
"""

from __future__ import annotations

import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent.parent
