"""``python -m services.calib``: run the calib service (settings from WISP_* variables)."""

from services.calib.service import main

main()
