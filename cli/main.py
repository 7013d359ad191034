"""Entry point of the ``updock`` command.

Only the standard library is loaded before the guard below, so that Ctrl-C
while the interpreter loads the rest (about a second on a busy machine)
ends with one line and exit code 130, never a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from cli.commandline import run

        code = run(sys.argv[1:])
    except KeyboardInterrupt:
        print("interrupted before anything changed", file=sys.stderr)
        code = 130  # cli.exitcodes.INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
