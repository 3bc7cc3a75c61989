"""A deterministic simulation of the admission loop (see world.py)."""
