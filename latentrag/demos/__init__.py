"""Sections of ``latentrag demo``, one module per capability, each with ``run(store, out)``."""
