"""The ``trio-sudp`` command line: the typer app (``app``) and its command groups."""
