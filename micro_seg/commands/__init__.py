"""CLI sub-commands: each module exposes ``register(subparsers)`` (see :mod:`micro_seg.cli`)."""
