"""TAP 1.1: the sync (and later async) query endpoints and their VOSI resources."""
