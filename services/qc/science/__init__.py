"""QC science: pure metric computations on product files (no database, store or bus)."""
