"""``python -m micro_seg`` runs the command-line interface."""

from micro_seg.cli import main_entry

main_entry()
