"""``python -m agent`` runs the ``retainer`` command line."""

from agent.cli import main

main()
