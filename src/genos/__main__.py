"""``python -m genos``: the same as the ``genos`` command."""

from genos.cli import main

main()
