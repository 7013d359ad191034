"""Exit codes of the ``updock`` command, one named constant each.

The README lists them; scripts may rely on every value here.
"""

OK = 0
INTERNAL = 1  # a bug in updock: the traceback is in the DEBUG log
USAGE = 2  # the command line itself is wrong
BAD_INPUT = 3  # manifest, package, config or option invalid; nothing changed
INTEGRITY = 4  # hash, size, signature, expiry or version-rollback check failed
LOCKED = 5  # another updock command holds the deployment's lock
ROLLED_BACK = 6  # the change failed and was rolled back; the old state is intact
JOURNAL_CORRUPT = 7  # the journal is damaged before its tail
NO_SPACE = 8  # not enough free space; nothing changed
DOWNLOAD = 9  # the server or network failed; nothing changed
SERVICES = 10  # Docker or compose failed or is unreachable
ROLLBACK_FAILED = 11  # the change failed and so did the rollback: intervene
REFUSED = 12  # the request is unsafe or impossible in this state
UPGRADE_AVAILABLE = 20  # `upgrade check`: a newer release can be installed
INTERRUPTED = 130  # Ctrl-C
