"""vo-service: an observatory's data service, from raw frames to IVOA protocols."""

__version__ = "0.1.0"
