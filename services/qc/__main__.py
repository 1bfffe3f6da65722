"""``python -m services.qc``: run the qc service (settings from WISP_* variables)."""

from services.qc.service import main

main()
