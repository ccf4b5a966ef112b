"""Imports every built-in debiasing method so that it registers itself."""

from robustmsa.debias import clef, clue, experts, mctd, mid, mrid  # noqa: F401  (experts registers mme_jd)
