"""robustmsa: robust multimodal sentiment and affect analysis."""

__version__ = "0.1.0"
