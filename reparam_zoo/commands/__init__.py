"""One module per CLI command (the older commands still live in ``reparam_zoo/cli.py``)."""
