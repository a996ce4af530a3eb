"""The layers world: real pictures as moving layers, with exact motion (see world.py)."""
