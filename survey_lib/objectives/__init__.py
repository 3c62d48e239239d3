"""One file per training objective."""
