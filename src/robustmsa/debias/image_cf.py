"""Image counterfactuals: keep the context, suppress the salient content.

**Real images** (the attention-mask procedure): a saliency map from the image
encoder's activations on its last feature map (h x w = 7 x 7) — the channel
mean of the activations, or Grad-CAM towards the encoder's own top ImageNet
class — is normalised to [0, 1] per image, enhanced by a factor
(``min(1, factor * s)``), smoothed with a Gaussian convolution, resized to the
image (bilinear) and used to alpha-blend the image towards a blurred (or
mean-colour) version of itself: ``x_cf = (1 - alpha m) x + alpha m x_bg``.
The counterfactual image is then encoded like the factual one.

**Image attribute words** (MMSD2.0 here, no pictures): the most salient
attribute tokens for a trained model's predicted class (occlusion or gradient
attribution, label-free) are replaced by a ``[MASK]`` word vector (or zeros).

Both makers have ``key`` and ``transform(samples) -> list[(Lj, Di) array]``,
the interface :func:`robustmsa.debias.text_cf.make_counterfactual_bundle` uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustmsa.data.batch import Sample, collate
from robustmsa.debias.text_cf import backbone_of, check_ratio, model_fingerprint, select_top, token_attribution
from robustmsa.errors import ConfigError
from robustmsa.features.cache import CachedText, FeatureCache, content_key, file_digest
from robustmsa.features.image import ImageEncoder, build_image_encoder, find_image, load_image
from robustmsa.method import Method
from robustmsa.models.base import Backbone

# --- the attention-mask procedure (pure tensor functions) -------------------


def activation_saliency(feature_map: Tensor) -> Tensor:
    """Channel mean of a (B, C, h, w) activation map -> (B, h, w)."""
    return feature_map.mean(dim=1)


def gradcam_saliency(encoder: ImageEncoder, images: Tensor) -> Tensor:
    """Grad-CAM (B, h, w) of (B, 3, 224, 224) images in [0, 1] towards the encoder's top ImageNet class."""
    net = encoder.network()
    with torch.enable_grad():
        fmap = encoder.feature_map(images).detach().requires_grad_(True)
        logits = net._fc(fmap.mean(dim=(2, 3)))
        (grad,) = torch.autograd.grad(logits.max(dim=1).values.sum(), fmap)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * fmap).sum(dim=1)).detach()


def normalise_unit(saliency: Tensor) -> Tensor:
    """Per-map min-max scaling of (B, h, w) to [0, 1] (a constant map becomes 0)."""
    flat = saliency.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1) - low).clamp_min(1e-12)
    return ((saliency - low) / span).clamp(0.0, 1.0)


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """A normalised (1, 1, size, size) Gaussian kernel (``size`` odd)."""
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"smoothing kernel size must be a positive odd number, got {size}")
    if sigma <= 0:
        raise ConfigError(f"smoothing sigma must be > 0, got {sigma}")
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(axis**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).view(1, 1, size, size)


def attention_mask(saliency: Tensor, size: tuple[int, int], enhance: float = 2.0, kernel_size: int = 3, sigma: float = 1.0) -> Tensor:
    """Saliency (B, h, w) -> suppression mask (B, H, W) in [0, 1]: normalise, enhance, smooth, resize."""
    if enhance <= 0:
        raise ConfigError(f"saliency enhancement factor must be > 0, got {enhance}")
    s = (normalise_unit(saliency) * enhance).clamp(max=1.0).unsqueeze(1)
    kernel = gaussian_kernel(kernel_size, sigma).to(s)
    pad = kernel_size // 2
    s = F.conv2d(F.pad(s, (pad, pad, pad, pad), mode="replicate"), kernel)
    s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
    return s.squeeze(1).clamp(0.0, 1.0)


def suppress(images: Tensor, mask: Tensor, alpha: float = 0.9, background: str = "blur", blur: int = 31) -> Tensor:
    """Alpha-blend (B, 3, H, W) images towards a background where the (B, H, W) mask is high.

    ``background='blur'``: a box blur of width ``blur``; ``'mean'``: the mean colour of each image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"blend alpha must be in [0, 1], got {alpha}")
    if background == "mean":
        bg = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    elif background == "blur":
        if blur < 1 or blur % 2 == 0:
            raise ConfigError(f"blur width must be a positive odd number, got {blur}")
        bg = F.avg_pool2d(images, blur, stride=1, padding=blur // 2, count_include_pad=False)
    else:
        raise ConfigError(f"background must be 'blur' or 'mean', got '{background}'")
    weight = alpha * mask.unsqueeze(1)
    return (1.0 - weight) * images + weight * bg


def image_counterfactual(
    images: Tensor,
    encoder: ImageEncoder,
    saliency: str = "activation",
    enhance: float = 2.0,
    kernel_size: int = 3,
    sigma: float = 1.0,
    alpha: float = 0.9,
    background: str = "blur",
) -> tuple[Tensor, Tensor]:
    """Counterfactual (B, 3, H, W) images in [0, 1] with their salient content suppressed, and the (B, H, W) mask."""
    if saliency == "activation":
        with torch.no_grad():
            sal = activation_saliency(encoder.feature_map(images))
    elif saliency == "gradcam":
        sal = gradcam_saliency(encoder, images)
    else:
        raise ConfigError(f"saliency must be 'activation' or 'gradcam', got '{saliency}'")
    mask = attention_mask(sal.cpu(), tuple(images.shape[2:]), enhance, kernel_size, sigma)  # type: ignore[arg-type]
    return suppress(images.cpu(), mask, alpha, background), mask


class SaliencyImageCounterfactual:
    """Counterfactual visual tokens of real images ``<folder>/<image id>.jpg`` (attention-mask procedure).

    The image id of a sample is ``image_ids[sample.id]`` when given, else the
    sample id. Tokens are cached on disk by image content and settings.
    """

    def __init__(
        self,
        folder: str | Path,
        encoder: ImageEncoder | None = None,
        image_ids: Mapping[str, str] | None = None,
        saliency: str = "activation",
        enhance: float = 2.0,
        kernel_size: int = 3,
        sigma: float = 1.0,
        alpha: float = 0.9,
        background: str = "blur",
    ) -> None:
        self.folder = Path(folder)
        self.encoder = encoder or build_image_encoder()
        self.image_ids = dict(image_ids) if image_ids is not None else None
        self.settings = {"saliency": saliency, "enhance": enhance, "kernel_size": kernel_size, "sigma": sigma, "alpha": alpha, "background": background}
        if saliency not in ("activation", "gradcam"):
            raise ConfigError(f"saliency must be 'activation' or 'gradcam', got '{saliency}'")
        # fail on bad settings now, not after the first images were read
        attention_mask(torch.zeros(1, 2, 2), (4, 4), enhance, kernel_size, sigma)
        suppress(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), alpha, background)
        self.key = content_key("saliency_cf", self.encoder.key, *(f"{k}={v}" for k, v in sorted(self.settings.items())))[:16]
        self.cache = FeatureCache(self.encoder.cache_root / "image_counterfactual" / self.key, {"encoder": self.encoder.key, **self.settings})

    def transform(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        paths = [find_image(self.folder, self.image_ids.get(s.id, s.id) if self.image_ids is not None else s.id) for s in samples]
        keys = [content_key(self.key, file_digest(p))[:40] for p in paths]
        found = self.cache.get(keys)
        missing = list(dict.fromkeys((k, p) for k, p in zip(keys, paths) if k not in found))
        size = self.encoder.batch_size
        for start in range(0, len(missing), size):
            chunk = missing[start : start + size]
            pixels = torch.as_tensor(np.stack([load_image(p) for _, p in chunk]))
            cf_images, _ = image_counterfactual(pixels, self.encoder, **self.settings)  # type: ignore[arg-type]
            tokens = self.encoder.encode_pixels(cf_images)
            computed = {k: CachedText(t, np.zeros(t.shape[0], bool), []) for (k, _), t in zip(chunk, tokens)}
            self.cache.put(computed)
            found.update(computed)
        return [found[k].features for k in keys]


class AttributeMasker:
    """Counterfactual attribute-word tokens: the most salient ``ceil(ratio * Li)`` tokens replaced.

    Salience: :func:`~robustmsa.debias.text_cf.token_attribution` of a
    trained ``model`` (Backbone or Method) on the ``image`` tokens, for its own
    predicted class. ``replacement``: the (Di,) vector put in place of a masked
    attribute (e.g. :func:`~robustmsa.debias.text_cf.mask_embedding` of the
    text encoder that encoded the attributes); zeros by default.
    """

    def __init__(
        self,
        model: Backbone | Method,
        ratio: float = 0.4,
        method: str = "occlusion",
        replacement: np.ndarray | None = None,
        batch_size: int = 128,
    ) -> None:
        check_ratio(ratio, "attribute mask ratio")
        if method not in ("occlusion", "gradient"):
            raise ConfigError(f"attribution method must be 'occlusion' or 'gradient', got '{method}'")
        self.model = model
        self.ratio = ratio
        self.method = method
        self.replacement = None if replacement is None else np.asarray(replacement, dtype=np.float32)
        self.batch_size = batch_size
        rep_id = "zeros" if self.replacement is None else content_key(self.replacement.tobytes().hex())
        self.key = content_key("attribute_mask", method, str(ratio), rep_id, model_fingerprint(backbone_of(model)))[:16]

    def transform(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        replacement = None if self.replacement is None else torch.as_tensor(self.replacement)
        out: list[np.ndarray] = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            batch = collate(chunk)
            if batch.image is None:
                raise ConfigError("AttributeMasker: the samples have no image tokens")
            scores = token_attribution(self.model, batch, "image", self.method, replacement).cpu().numpy()
            for i, s in enumerate(chunk):
                assert s.image is not None
                n = s.image.shape[0]
                chosen = select_top(scores[i, :n], self.ratio)
                tokens = s.image.astype(np.float32, copy=True)
                tokens[chosen] = 0.0 if self.replacement is None else self.replacement
                out.append(tokens)
        return out
