"""Randomized-smoothing certification (Cohen et al. 2019) and its resumable dataset driver."""

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
    CERTIFIERS,
    Certificate,
    Certifier,
    CohenCertifier,
    NoiseStream,
    build_certifier,
    certify_from_counts,
    image_generator,
    image_seed,
    lower_confidence_bound,
    predict_pvalue,
    radius_from_bound,
)

__all__ = [
    "ABSTAIN",
    "CERTIFIERS",
    "COLUMNS",
    "Certificate",
    "Certifier",
    "CertifyStatus",
    "CohenCertifier",
    "NoiseStream",
    "build_certifier",
    "certify_dataset",
    "certify_from_counts",
    "image_generator",
    "image_seed",
    "lower_confidence_bound",
    "merge_shards",
    "meta_path",
    "partial_path",
    "predict_pvalue",
    "radius_from_bound",
    "read_certification",
]
