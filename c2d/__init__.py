"""Compute-to-Data node: core (settings, embedded stack, database, chain)."""
