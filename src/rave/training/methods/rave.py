"""RAVE: guidance by the residual vector between well-lit and backlit embeddings.

Guided-stage loss (docs/method.md, "Guidance and identity losses")::

    residual_weight * L_res(Phi(O), r, thr) + identity_weight * L_id(O, I)

(``residual_weight`` and the residual file are :class:`RaveOptions`, ``method_options`` in
the config).

with ``Phi`` the guidance encoder (images squashed to its input size) and ``L_id`` the
identity encoder's five-layer feature loss.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rave.evaluation.exposure import CLIP_THRESHOLD
from rave.losses import (
    highlight_darkening_loss,
    highlight_loss,
    light_map_gain_excess,
    light_map_total_variation,
    residual_loss,
)
from rave.training.methods.base import GuidanceMethod, MethodContext

__all__ = ["RESIDUAL_FILENAME", "RaveMethod", "RaveOptions"]

log = logging.getLogger(__name__)

# where a residual computed at the start of a run is saved, inside the run directory
RESIDUAL_FILENAME = "residual.pt"


@dataclass(frozen=True)
class RaveOptions:
    """RAVE's settings (``method_options``); defaults are the paper's."""

    # a saved residual vector; empty: computed at start from the two folders, saved in the run
    residual: str = ""
    residual_weight: float = 1920.0  # 6 * 16 * 20
    # weight of L_res in the loss the round-extension rule compares: the authors' code
    # compares 16 * 20 * L_res + 22.5 * L_id (a sixth of the trained L_res weight) with 90
    extension_residual_weight: float = 320.0
    # Not RAVE: weight of rave.losses.highlight_loss (0 = off, the paper's method). The
    # built-in model's offline recipe (docs/method.md) uses it because its EfficientNet
    # guidance does not penalise blown highlights; highlight_knee is where it starts.
    highlight_weight: float = 0.0
    highlight_knee: float = 0.9
    # measure the highlight term before the output's clamp at 1 (rave.losses.highlight_loss
    # with the light map), so that pixels pushed past white keep a gradient
    highlight_unclamped: bool = False
    # Not RAVE either: weight of rave.losses.highlight_darkening_loss (0 = off), which keeps
    # bright input pixels from being darkened (skies, clouds), same knee.
    highlight_keep_weight: float = 0.0
    # False: input pixels already clipped (>= 0.99) are free to darken back into range, as
    # the authors' models do; only unclipped highlights are held
    highlight_keep_saturated: bool = True
    # Not RAVE either: weight of rave.losses.light_map_total_variation (0 = off), which keeps
    # the light map from following texture (it flattens local contrast in I / L)
    light_tv_weight: float = 0.0
    # Not RAVE either: the exponent of L_res (rave.losses.residual_loss; 2 is the paper's)
    residual_power: float = 2.0
    # Not RAVE either: the smoothing scale of that power (rave.losses.residual_loss; 0 =
    # the plain power): below 2, images already within about this of thr are not pushed
    residual_scale: float = 0.0
    # Not RAVE either: weight of rave.losses.light_map_gain_excess (0 = off), which bounds
    # the gain 1 / L softly at gain_limit (the darkest regions' lift, where noise is)
    gain_limit_weight: float = 0.0
    gain_limit: float = 3.0

    def __post_init__(self) -> None:
        if self.residual_power <= 0:
            raise ValueError(
                f"method_options.residual_power must be > 0, got {self.residual_power}"
            )
        if self.residual_scale < 0:
            raise ValueError(
                f"method_options.residual_scale must be >= 0, got {self.residual_scale}"
            )
        if self.gain_limit <= 1:
            raise ValueError(f"method_options.gain_limit must be > 1, got {self.gain_limit}")


class RaveMethod(GuidanceMethod):
    """RAVE's residual-vector guidance."""

    name = "rave"
    Options = RaveOptions

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.guidance_encoder = context.create_encoder(self.config.guidance_encoder)
        self.residual: Tensor | None = None  # (D,) unit vector on the method's device
        self.threshold: float = 0.0
        self.encoder_name: str = self.guidance_encoder.name

    def setup(self) -> None:
        """Load the residual file named by ``options.residual``, or compute it from the folders."""
        from rave.guidance import residual as residual_module

        ctx = self.context
        if self.options.residual:
            rv = residual_module.load_residual(self.options.residual)
            residual_module.check_encoder(rv, self.guidance_encoder)  # name, or weights
            log.info("residual vector loaded from %s", self.options.residual)
        else:
            log.info(
                "computing the residual vector from %d backlit and %d well-lit images",
                len(ctx.backlit_files),
                len(ctx.well_lit_files),
            )
            # Every rank computes it (deterministic, identical), so no file handshake is needed.
            if not self.config.well_lit_dir:
                raise ValueError(
                    "rave: set well_lit_dir (or method_options.residual: a residual file)"
                )
            rv = residual_module.compute_residual(
                self.config.backlit_dir,
                self.config.well_lit_dir,
                self.guidance_encoder,
                device=ctx.device,
                progress=ctx.show_progress,
            )
            if ctx.is_main:
                path = ctx.run_dir / RESIDUAL_FILENAME
                residual_module.save_residual(rv, path, overwrite=True)
                log.info("residual vector saved to %s (thr %.4f)", path, rv.threshold)
        self._set(rv.residual, float(rv.threshold), str(rv.encoder))

    def _set(self, residual: Tensor, threshold: float, encoder_name: str) -> None:
        self.residual = residual.detach().float().reshape(-1).to(self.context.device)
        self.threshold = threshold
        self.encoder_name = encoder_name

    def guided_loss(
        self, enhanced: Tensor, inputs: Tensor, *, step: int, light: Tensor | None = None
    ) -> dict[str, Tensor]:
        if self.residual is None:
            raise RuntimeError("RaveMethod.setup() or load_state_dict() must run before the loss")
        embeddings = self.guidance_encoder.embed(enhanced, resize="squash")
        l_res = residual_loss(
            embeddings,
            self.residual,
            self.threshold,
            power=self.options.residual_power,
            scale=self.options.residual_scale,
        )
        l_id = self.identity(enhanced, inputs)
        total = self.options.residual_weight * l_res + self.config.identity_weight * l_id
        terms: dict[str, Tensor] = {"residual": l_res, "identity": l_id}
        if self.options.highlight_weight:
            if self.options.highlight_unclamped and light is None:
                raise ValueError("highlight_unclamped needs the light map (loss(..., light=L))")
            l_hi = highlight_loss(
                enhanced,
                inputs,
                knee=self.options.highlight_knee,
                light=light if self.options.highlight_unclamped else None,
            )
            total = total + self.options.highlight_weight * l_hi
            terms["highlight"] = l_hi
        if self.options.highlight_keep_weight:
            l_keep = highlight_darkening_loss(
                enhanced,
                inputs,
                knee=self.options.highlight_knee,
                saturated=None if self.options.highlight_keep_saturated else CLIP_THRESHOLD,
            )
            total = total + self.options.highlight_keep_weight * l_keep
            terms["highlight_keep"] = l_keep
        if self.options.light_tv_weight:
            if light is None:
                raise ValueError("light_tv_weight needs the light map (loss(..., light=L))")
            l_tv = light_map_total_variation(light)
            total = total + self.options.light_tv_weight * l_tv
            terms["light_tv"] = l_tv
        if self.options.gain_limit_weight:
            if light is None:
                raise ValueError("gain_limit_weight needs the light map (loss(..., light=L))")
            l_gain = light_map_gain_excess(light, self.options.gain_limit)
            total = total + self.options.gain_limit_weight * l_gain
            terms["gain_excess"] = l_gain
        with torch.no_grad():
            # the mean projection on r, to watch it approach thr (not part of the loss)
            projection = (embeddings.float() @ self.residual.float()).mean()
        return {**terms, "projection": projection, "total": total}

    def extension_loss(self, values: Mapping[str, float]) -> float:
        """``extension_residual_weight * L_res + identity_weight * L_id`` (the authors')."""
        return (
            self.options.extension_residual_weight * values["residual"]
            + self.config.identity_weight * values["identity"]
        )

    def state_dict(self) -> dict[str, Any]:
        if self.residual is None:
            return {}
        return {
            "residual": self.residual.detach().cpu(),
            "threshold": self.threshold,
            "encoder": self.encoder_name,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.setup()
            return
        self._set(state["residual"], float(state["threshold"]), str(state["encoder"]))
