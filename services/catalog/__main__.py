"""``python -m services.catalog``: run the catalog service (settings from WISP_* variables)."""

from services.catalog.service import main

main()
