"""``python -m micro_seg`` runs the command-line interface."""

import sys

from micro_seg.cli import main

sys.exit(main())
