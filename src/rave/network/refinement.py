"""Light-map refinement: an edge-aware filter of the network's light map and a highlight guard.

Not part of RAVE: an optional, fixed (not learned) last step of a model, recorded in its
weights file (``light_refinement`` metadata) and run by every engine (the tiled CPU
kernel, the ONNX export, the server). The built-in ``default`` model uses it
(docs/model_card.md); the authors' models do not.

Why: networks guided by EfficientNet statistics lift shadows as much as the CLIP-trained
reference but their light maps ``L`` follow fine texture, which ``I / L`` divides out, so
the photos look flat (no-reference naturalness scores such as NIQE penalise it). A
network cannot be taught to produce the smooth map itself (docs/method.md, "Light-map
refinement": distillation closes a third of the gap at most), while the filter, applied at
the photo's own resolution, keeps the lift and restores local contrast. For a light map
``L`` of an image ``I`` with largest channel ``m``::

    log L' = max(GF_r,eps(log L | log m), min(log m - log knee, 0))

``GF`` is He, Sun and Tang's guided filter (ECCV 2010), guided by ``log m`` (LIME's
illumination estimate): in each window the result is a linear function of the guide, so
the light map keeps its steps at the subject's outline and loses the texture inside. The
second term is the highlight guard: ``L' >= min(m / knee, 1)``, so at strength 1 the
output ``I / L'`` rises above ``knee`` only where the input already was, and never above
the input there: a refined model blows no highlight the photo did not have.

The filter reads ``2 r`` pixels around each output pixel, so the tiled engine runs it per
tile on the tile's light map grown by :attr:`LightRefinement.halo`; windows are averaged
over their pixels inside the image (no padding values), which makes every size from 1x1 up
valid and the result independent of the tiling.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LIGHT_FLOOR", "LightRefinement", "box_mean", "guided_filter"]

LIGHT_FLOOR = 1e-3  # as the light-map losses: below it a pixel is blown whatever L is


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over the ``(2 r + 1)^2`` window around each pixel, of the pixels in the image.

    Windows that reach past the border average only the pixels they cover (He et al.'s
    normalisation), so any size is valid and a constant stays constant up to the border.
    Separable (rows, then columns: the in-image part of a window is a rectangle), so the cost
    per pixel grows with ``r``, not ``r^2``.

    Args:
        x: ``(B, C, H, W)``.
        radius: ``r >= 0``.

    Returns:
        ``(B, C, H, W)``.
    """
    if radius == 0:
        return x
    side = 2 * radius + 1
    rows = F.avg_pool2d(x, (1, side), stride=1, padding=(0, radius), count_include_pad=False)
    return F.avg_pool2d(rows, (side, 1), stride=1, padding=(radius, 0), count_include_pad=False)


def guided_filter(source: Tensor, guide: Tensor, radius: int, eps: float) -> Tensor:
    """He, Sun and Tang's guided filter (ECCV 2010) of ``source`` by a one-channel ``guide``.

    In every window the output is the least-squares fit ``a * guide + b`` to ``source``
    with ``a`` shrunk by ``eps`` (averaged over the windows that cover a pixel): smooth
    where the guide is flat, following the guide's edges where it has them. So a light map
    filtered by the log of the photo's brightness keeps its steps at the subject's outline
    and loses the texture inside, which is what ``I / L`` needs to keep local contrast.

    Args:
        source: ``(B, C, H, W)``.
        guide: ``(B, 1, H, W)``.
        radius: window radius in pixels, ``>= 0`` (0 returns ``source``).
        eps: ``> 0``, in the guide's units squared: edges of the guide with a local variance
            well above ``eps`` are kept, the rest smoothed.

    Returns:
        ``(B, C, H, W)``; ``source`` itself where ``source`` is already ``a * guide + b``
        for constant ``a``, ``b``.
    """
    if guide.ndim != 4 or guide.shape[1] != 1 or guide.shape[2:] != source.shape[2:]:
        raise ValueError(
            f"expected a (B, 1, H, W) guide of the source's size, got {tuple(guide.shape)} "
            f"for {tuple(source.shape)}"
        )
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    mean_guide = box_mean(guide, radius)
    mean_source = box_mean(source, radius)
    covariance = box_mean(guide * source, radius) - mean_guide * mean_source
    variance = box_mean(guide * guide, radius) - mean_guide * mean_guide
    slope = covariance / (variance + eps)
    offset = mean_source - slope * mean_guide
    return box_mean(slope, radius) * guide + box_mean(offset, radius)


@dataclass(frozen=True)
class LightRefinement:
    """The refinement of the module docstring.

    Args:
        radius: guided filter window radius, pixels of the photo as enhanced (0: the guard
            only).
        eps: guided filter regularisation, in (log units)^2 of the guide.
        knee: in (0, 1]: outputs may rise above it only where the input already was.
    """

    radius: int = 8
    eps: float = 0.1
    knee: float = 0.9

    def __post_init__(self) -> None:
        if not isinstance(self.radius, int) or isinstance(self.radius, bool) or self.radius < 0:
            raise ValueError(f"radius must be an int >= 0, got {self.radius!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if not 0 < self.knee <= 1:
            raise ValueError(f"knee must be in (0, 1], got {self.knee!r}")

    @property
    def halo(self) -> int:
        """Pixels of light map needed on each side of an output pixel (two box means)."""
        return 2 * self.radius

    def __call__(self, light: Tensor, image: Tensor) -> Tensor:
        """The refined light map.

        Args:
            light: ``(B, 1, H, W)`` the network's light map, ``L >= 0``.
            image: ``(B, 3, H, W)`` the image it was computed on, float in [0, 1].

        Returns:
            ``(B, 1, H, W)`` float32, ``L' >= min(m / knee, 1) > 0``.
        """
        log_light = torch.log(light.float().clamp(min=LIGHT_FLOOR))
        log_largest = torch.log(image.float().amax(dim=1, keepdim=True).clamp(min=LIGHT_FLOOR))
        if self.radius:
            log_light = guided_filter(log_light, log_largest, self.radius, self.eps)
        guard = (log_largest - math.log(self.knee)).clamp(max=0.0)
        return torch.exp(torch.maximum(log_light, guard))

    def to_metadata(self) -> str:
        """JSON text for a weights file's ``light_refinement`` metadata."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_metadata(cls, text: str, source: str) -> LightRefinement:
        """Parse :meth:`to_metadata`'s text.

        Raises:
            ValueError: not a JSON object of this class's fields, or values out of range
                (one line naming ``source``).
        """
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise TypeError(f"expected a JSON object, got {type(fields).__name__}")
            return cls(**fields)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{source}: bad light_refinement metadata {text!r} ({err})") from None
