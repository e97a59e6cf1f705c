"""Training and evaluation loops (engine.py, in DETR's shape), checkpoints (official layout and resumable
training state) and the distributed setup."""
