"""vit-survey: reference implementations of vision transformers, for reading next to the papers.

Modules: ``layers`` (shared blocks), ``models`` (one file per architecture), ``objectives`` (one file
per training objective), ``data``, ``train``, ``evaluate``, ``viz``, ``report``, ``cli``.
"""
__version__ = "0.1.0"
