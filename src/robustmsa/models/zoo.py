"""Imports every built-in backbone so that they register themselves."""

from robustmsa.models import lf_dnn, text_only, tfn  # noqa: F401
