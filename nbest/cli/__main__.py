"""``python -m nbest.cli`` runs the ``nbest`` command."""

from nbest.cli import main

main()
