"""What every cache and tool of taocache stands on: finding a pipeline's denoisers, handling their outputs,
reading the step a call is at, fingerprints, the package's data, deciding alike on every rank of a
context-parallel run (``parallel``), and diffusers' hook internals (``compat``).

Nothing here imports another part of taocache.
"""
