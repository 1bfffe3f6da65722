"""The catalogue stage: source catalogues of solved frames and coadds (science in ``science/``)."""
