"""Finding a kernel under a root, reading its artifacts, and the facts the checks need from it."""
