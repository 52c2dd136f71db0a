#!/usr/bin/env python3
"""Parley's command line: ``python run_agent.py --help``."""

import sys

from parley.agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
