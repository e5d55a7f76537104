#!/usr/bin/env python
"""Profile augmentation experiments: see augment/profiler/cli.py or `--help`."""

import sys

from augment.profiler.cli import main

if __name__ == "__main__":
    sys.exit(main())
