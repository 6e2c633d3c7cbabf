"""What every cache and tool of taocache stands on: finding a pipeline's denoisers, handling their outputs,
reading the step a call is at, fingerprints, the package's data, and diffusers' hook internals (``compat``).

Nothing here imports another part of taocache.
"""
