"""Randomized-smoothing certification (Cohen et al. 2019), its adaptive variant and the
resumable dataset driver. The methods are the modules of ``dmae.certify.methods``."""

from __future__ import annotations

from dmae import lazy_exports

# Each name is imported from its module on first use (PEP 562): reading and merging
# certifications (the report, merge jobs) then never loads torch or scipy (seconds per job).
_EXPORTS = {
    "base": ("ABSTAIN", "MISMATCH", "Ceiling", "Certificate", "CertificationMethod",
             "Prediction"),
    "certifier": ("Certifier", "build_certifier"),
    "methods": ("DEFAULT_METHOD", "method_settings"),
    "noise": ("NoiseStream", "image_generator", "image_seed"),
    "records": ("COLUMNS", "merge_shards", "read_certification"),
    "run": ("CertifyStatus", "certify_dataset", "meta_path", "partial_path"),
    "sequential": ("SequentialPlan",),
    "stats": ("certify_from_counts", "lower_confidence_bound", "predict_pvalue",
              "radius_from_bound", "upper_confidence_bound"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
