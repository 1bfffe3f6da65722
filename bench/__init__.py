"""Side-by-side benchmarks of Wisp's science stages against the established tools for the same job.

``python -m bench`` simulates (once, cached in ``bench/.data/``) a night with ``wisp.sim``, runs each job
with our stage and with its peer (ccdproc, SExtractor, SWarp, SCAMP, astrometry.net) as separate
processes on the same inputs, scores every output against the simulator's truth and writes the table
into ``bench/README.md``. See that file for what is measured and how.
"""
