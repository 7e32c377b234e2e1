"""Randomized-smoothing certification (Cohen et al. 2019), its adaptive variant and the
resumable dataset driver."""

from dmae.certify.adaptive import AdaptiveCertifier, SequentialPlan
from dmae.certify.methods import CERTIFIERS, DEFAULT_METHOD, build_certifier, method_settings
from dmae.certify.run import (
    COLUMNS,
    CertifyStatus,
    certify_dataset,
    merge_shards,
    meta_path,
    partial_path,
    read_certification,
)
from dmae.certify.smooth import (
    ABSTAIN,
    Certificate,
    Certifier,
    CohenCertifier,
    NoiseStream,
    Prediction,
    certify_from_counts,
    image_generator,
    image_seed,
    lower_confidence_bound,
    predict_pvalue,
    radius_from_bound,
    upper_confidence_bound,
)

__all__ = [
    "ABSTAIN",
    "CERTIFIERS",
    "COLUMNS",
    "DEFAULT_METHOD",
    "AdaptiveCertifier",
    "Certificate",
    "Certifier",
    "CertifyStatus",
    "CohenCertifier",
    "NoiseStream",
    "Prediction",
    "SequentialPlan",
    "build_certifier",
    "certify_dataset",
    "certify_from_counts",
    "image_generator",
    "image_seed",
    "lower_confidence_bound",
    "merge_shards",
    "meta_path",
    "method_settings",
    "partial_path",
    "predict_pvalue",
    "radius_from_bound",
    "read_certification",
    "upper_confidence_bound",
]
