"""`python -m svdbench.compare SWEEP_DIR`: the comparison of a sweep's jobs (svdbench/compare/command.py)."""

import sys

from svdbench.compare.command import main

if __name__ == "__main__":
    sys.exit(main())
