"""The qc service: QC metrics of every product and system quality flags from instrument thresholds."""
