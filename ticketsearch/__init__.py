"""ticketsearch: search for sparse, adversarially robust, fast-converging lottery tickets."""

__version__ = "0.1.0"
