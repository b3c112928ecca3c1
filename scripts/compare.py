#!/usr/bin/env python
"""Compare the jobs of a sweep (same as `python -m svdbench.compare`): scripts/compare.py SWEEP_DIR [--out DIR]."""

import sys

from svdbench.compare.command import main

if __name__ == "__main__":
    sys.exit(main())
