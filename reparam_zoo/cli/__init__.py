"""The ``reparam-zoo`` command line: ``app`` (the parser, ``main`` and the table of commands) and one
module per command; ``argtypes`` holds the value types and option groups they share."""

import sys


def fail(msg: object) -> int:
    """Print the one-line error every command gives (``reparam-zoo: error: ...``) and return exit code 2."""
    print(f"reparam-zoo: error: {msg}", file=sys.stderr)
    return 2
