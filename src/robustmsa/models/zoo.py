"""Imports every built-in backbone so that they register themselves."""

from robustmsa.models import bbfn, cenet, context, ef_lstm, graph_mfn, image_text, lf_dnn, lmf, mag, mctn, mfm, mfn, misa, mmim, mult, multitask, self_mm, tetfn, text_centric, text_only, tfn, tfr_net  # noqa: F401
