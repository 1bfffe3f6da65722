"""``python -m services.coadd``: run the coadd service (settings from WISP_* variables)."""

from services.coadd.service import main

main()
