"""Built-in data sources registered in :data:`robustmsa.registry.DATASETS`.

Every loader is a function returning a :class:`DataBundle`, so configs and the
CLI can say ``DATASETS.build("mosi_csv", path=..., text_encoder="hash")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustmsa.data.caer import read_caer_s
from robustmsa.data.clips import ClipSettings, extract_clips
from robustmsa.data.cmu_h5 import read_cmu_h5
from robustmsa.data.context_synthetic import ContextCorpusConfig, generate_context_corpus
from robustmsa.data.dataset import DataBundle
from robustmsa.data.emotic import read_emotic
from robustmsa.data.mmsa import read_mmsa_pickle
from robustmsa.data.synthetic import SyntheticConfig, generate_corpus
from robustmsa.data.text_corpora import read_mmsd2, read_mosi_csv, read_mvsa, read_vader
from robustmsa.registry import DATASETS


@DATASETS.register("mmsa_pickle", forwards=read_mmsa_pickle)
def mmsa_pickle(path: str | Path, **kwargs: Any) -> DataBundle:
    """MMSA feature pickle (MOSI/MOSEI/SIMS ``aligned_50.pkl``/``unaligned_50.pkl``); see :func:`read_mmsa_pickle`."""
    return read_mmsa_pickle(path, **kwargs)


@DATASETS.register("clips", forwards=ClipSettings)
def clips(labels: str | Path, media: str | Path, cache_dir: str | Path | None = None, limit: int | None = None, workers: int = 1, **settings: Any) -> DataBundle:
    """Raw clips: a labels CSV and a folder of audio / video files, features extracted and cached; see :func:`extract_clips`."""
    return extract_clips(labels, media, ClipSettings(**settings), cache_dir=cache_dir, limit=limit, workers=workers)


@DATASETS.register("cmu_mfn", forwards=read_cmu_h5)
def cmu_mfn(folder: str | Path, dataset: str = "youtube", **kwargs: Any) -> DataBundle:
    """CMU word-aligned h5 features of YouTube, MMMO or POM; see :func:`read_cmu_h5`."""
    return read_cmu_h5(folder, dataset, **kwargs)  # type: ignore[arg-type]


@DATASETS.register("mosi_csv", forwards=read_mosi_csv)
def mosi_csv(path: str | Path, **kwargs: Any) -> DataBundle:
    """CMU-MOSI transcripts with labels and the standard split; see :func:`read_mosi_csv`."""
    return read_mosi_csv(path, **kwargs)


@DATASETS.register("mmsd2", forwards=read_mmsd2)
def mmsd2(folder: str | Path, image_folder: str | Path | None = None, **kwargs: Any) -> DataBundle:
    """MMSD2.0 multimodal sarcasm (text + image attribute words); see :func:`read_mmsd2`.

    With ``image_folder``, the visual modality is EfficientNet-Lite0 tokens of
    the real pictures ``<image_folder>/<image_id>.jpg`` instead of the attribute
    words (:func:`robustmsa.features.image.with_image_folder`).
    """
    bundle = read_mmsd2(folder, **kwargs)
    if image_folder is None:
        return bundle
    from robustmsa.features.image import build_image_encoder, with_image_folder

    return with_image_folder(bundle, image_folder, build_image_encoder(kwargs.get("cache_dir")))


@DATASETS.register("mvsa", forwards=read_mvsa)
def mvsa(folder: str | Path, **kwargs: Any) -> DataBundle:
    """MVSA-Single tweet sentiment (3 classes); see :func:`read_mvsa`."""
    return read_mvsa(folder, **kwargs)


@DATASETS.register("vader", forwards=read_vader)
def vader(path: str | Path, domain: str = "tweets", **kwargs: Any) -> DataBundle:
    """VADER human-rated sentiment (a file, or the folder plus ``domain``); see :func:`read_vader`."""
    return read_vader(path, domain=domain, **kwargs)


@DATASETS.register("synthetic", forwards=SyntheticConfig)
def synthetic(**kwargs: Any) -> DataBundle:
    """The generated corpus with a planted text bias; keyword arguments are :class:`SyntheticConfig` fields."""
    return generate_corpus(SyntheticConfig.from_dict(kwargs))


@DATASETS.register("synthetic_context", forwards=ContextCorpusConfig)
def synthetic_context(**kwargs: Any) -> DataBundle:
    """The generated context-aware emotion corpus with a planted scene bias; keyword arguments are
    :class:`ContextCorpusConfig` fields."""
    return generate_context_corpus(ContextCorpusConfig.from_dict(kwargs))


@DATASETS.register("emotic", forwards=read_emotic)
def emotic(folder: str | Path, **kwargs: Any) -> DataBundle:
    """EMOTIC from its official release folder (multi-label, body crop + masked context tokens); see :func:`read_emotic`."""
    return read_emotic(folder, **kwargs)


@DATASETS.register("caer_s", forwards=read_caer_s)
def caer_s(folder: str | Path, boxes: str | Path, **kwargs: Any) -> DataBundle:
    """CAER-S from its release folder and a face-box CSV (7 classes, face crop + face-masked frame tokens); see :func:`read_caer_s`."""
    return read_caer_s(folder, boxes, **kwargs)
