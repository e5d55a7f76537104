#!/usr/bin/env python
"""Profile augmentation experiments: see augment/cli.py or `--help`."""

import sys

from augment.cli import main

if __name__ == "__main__":
    sys.exit(main())
