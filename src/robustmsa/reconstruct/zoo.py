"""Imports the missing-modality methods so that they register: ``missing_robust``, ``lnln``, ``tcmr``."""

from robustmsa.reconstruct import base, lnln, tcmr  # noqa: F401
