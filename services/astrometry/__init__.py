"""The astrometry stage: WCS (TAN-SIP) and photometric zeropoint per chip.

``services.astrometry.science`` holds the pure science (arrays and astropy objects in, results out);
the service adapter (bus, store, database) lives beside it and only calls into the science.
"""
