"""``python -m trio_sudp``: the ``trio-sudp`` command line."""

from trio_sudp.cli.app import main

main()
