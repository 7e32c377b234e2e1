"""Randomized-smoothing certification (Cohen et al. 2019), its adaptive variant and the
resumable dataset driver."""

from __future__ import annotations

from dmae import lazy_exports

# Each name is imported from its module on first use (PEP 562): reading and merging
# certifications (the report, merge jobs) then never loads torch or scipy (seconds per job).
_EXPORTS = {
    "adaptive": ("AdaptiveCertifier", "SequentialPlan"),
    "methods": ("DEFAULT_METHOD", "build_certifier", "method_settings"),
    "records": ("COLUMNS", "merge_shards", "read_certification"),
    "run": ("CertifyStatus", "certify_dataset", "meta_path", "partial_path"),
    "smooth": ("ABSTAIN", "Certificate", "Certifier", "CohenCertifier", "NoiseStream",
               "Prediction", "certify_from_counts", "image_generator", "image_seed",
               "lower_confidence_bound", "predict_pvalue", "radius_from_bound",
               "upper_confidence_bound"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
