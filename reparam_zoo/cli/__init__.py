"""One module per CLI command (the older commands still live in ``reparam_zoo/cli.py``)."""

import sys


def fail(msg: object) -> int:
    """Print the one-line error every command gives (``reparam-zoo: error: ...``) and return exit code 2."""
    print(f"reparam-zoo: error: {msg}", file=sys.stderr)
    return 2
