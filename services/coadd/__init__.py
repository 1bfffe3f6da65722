"""The coadd stage: resampling of solved frames to a common tangent-plane grid, and their weighted stack.

``services.coadd.science`` holds the pure science (arrays and astropy WCS in, arrays out); the service
adapter (bus, store, database) lives beside it and only calls into the science.
"""
