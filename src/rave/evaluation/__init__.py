"""Scoring enhanced images: paired metrics under two protocols, no-reference metrics, reports.

Modules: :mod:`~rave.evaluation.paired` (PSNR/SSIM), :mod:`~rave.evaluation.perceptual`
(LPIPS), :mod:`~rave.evaluation.niqe`, :mod:`~rave.evaluation.brisque`,
:mod:`~rave.evaluation.exposure`, :mod:`~rave.evaluation.runner` (folders -> scores),
:mod:`~rave.evaluation.report` (table, CSV, JSON, HTML). The flat public API is
:mod:`rave.metrics`.
"""
