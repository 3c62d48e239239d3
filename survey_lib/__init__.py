"""vit-survey: reference implementations of vision transformers, for reading next to the papers.

Rooms, each with one job: ``layers`` (shared blocks), ``models`` (one file per architecture),
``objectives`` (one file per training objective), ``data``, ``recipes`` (how each method is
trained), ``train`` (the loop), ``evaluate``, ``cost``, ``zoo`` (tables), ``viz`` (figures),
``widgets``, ``report``, ``cli``.
"""
__version__ = "0.1.0"
