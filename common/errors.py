"""Errors the user fixes, and how entry points report them.

A missing or malformed file (body model, regressor, checkpoint, annotation), a wrong checkpoint or an unusable
setting is not a bug of the program: the entry points (`python -m main.train`, `main.test`, `main.demo`,
`embedded.demo`, `tools.*`) print its message alone and exit with status 2, without a traceback. Everything
else is a programming error: Python's traceback and status 1, as usual.

    if __name__ == "__main__":
        run_entry_point(main)          # main(argv) returns the exit status

`--debug` on the command line (or JOTR_DEBUG=1 in the environment) shows the traceback of user errors too.
"""
import os
import sys


class UserError(Exception):
    """Something the user fixes (a file, a checkpoint, a setting); the message says what, where and what to do."""


class InputError(UserError, ValueError):
    """A file or value whose content cannot be used (a ValueError, so existing `except ValueError` still apply)."""


# FileNotFoundError: every file the programs open comes from the user's data folder, config or command line.
USER_ERRORS = (UserError, FileNotFoundError)
DEBUG_FLAG = "--debug"
DEBUG_ENV = "JOTR_DEBUG"


def debug_requested(argv):
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_entry_point(main, argv=None):
    """Run main(argv) and exit with the status it returns (an int; anything else, e.g. a report, counts as 0).
    A user error exits with status 2 after one
    message on stderr; with --debug (removed from argv before `main` sees it) or JOTR_DEBUG=1 it propagates."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        status = main(argv)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {err}\n(the traceback: add {DEBUG_FLAG} or set {DEBUG_ENV}=1)", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)
