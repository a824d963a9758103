"""zhprune-hub: structured pruning of Hub LLMs with language-matched calibration."""

__version__ = "0.1.0"
