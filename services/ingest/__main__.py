"""``python -m services.ingest``: run the ingest service (settings from WISP_* variables)."""

from services.ingest.service import main

main()
