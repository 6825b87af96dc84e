"""Raw-frame ingest, calibration and reduction, and the night simulator."""
