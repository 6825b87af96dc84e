"""UWS 1.1: one job engine for every asynchronous service."""
