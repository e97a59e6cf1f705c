"""Command-line tools run from the repository root, e.g. `python tools/check_parity.py`."""
