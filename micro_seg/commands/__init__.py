"""CLI sub-commands: each module exposes ``register(subparsers)`` (see :mod:`micro_seg.cli`)."""

#: ``--page`` help of every command that reads an image (micro_seg.io.read_micrograph's ``page``).
PAGE_HELP = ("page of a multi-page file, counting every page from 0 (default: the first that is not a "
             "reduced-resolution preview, with a warning naming the pages not read)")
