"""``python -m services.astrometry``: run the astrometry service (settings from WISP_* variables)."""

from services.astrometry.service import main

main()
