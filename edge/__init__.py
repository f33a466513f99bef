"""roomrec edge: the service of the box in each room."""

__version__ = "0.1.0"
