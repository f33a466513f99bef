"""roomrec coordinator: the central service."""

__version__ = "0.1.0"
