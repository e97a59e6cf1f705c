"""Entry points (training, evaluation, demo) and the run configuration (main/config.py)."""
