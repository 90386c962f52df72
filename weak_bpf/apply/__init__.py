"""Applying a resolution: the pure plan, the one writer, and the report of a run (journal)."""
