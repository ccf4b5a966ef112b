"""Imports the missing-modality methods so that they register: ``missing_robust``, ``lnln``, ``tcmr``, ``tfr_net``."""

from robustmsa.reconstruct import base, lnln, tcmr, tfr_net  # noqa: F401
