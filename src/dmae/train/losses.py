"""The classification losses: plain and consistency-regularized (Jeong & Shin 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, targets: torch.Tensor,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy against class indices ``[B]`` or soft targets ``[B, K]`` (mixup).

    Computed in fp32 so autocast does not degrade the softmax.
    """
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def consistency_loss(logits_list: Sequence[torch.Tensor], labels: torch.Tensor, lam: float,
                     eta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Consistency-regularized loss of m noisy copies of one batch (Jeong & Shin, 2020).

    ``mean_i CE(logits_i, labels) + lam * mean_i KL(p_bar || p_i) + eta * H(p_bar)``, with
    ``p_i = softmax(logits_i)``, ``p_bar = mean_i p_i``; KL and entropy are averaged over the
    batch. ``labels`` (indices or soft targets) are shared by all copies. With one copy, or
    ``lam = eta = 0``, this is plain cross-entropy.
    """
    if len(logits_list) == 0:
        raise ValueError("consistency_loss: expected at least one logits tensor")
    logits = [lg.float() for lg in logits_list]
    ce = torch.stack([classification_loss(lg, labels, label_smoothing) for lg in logits]).mean()
    if lam == 0 and eta == 0:
        return ce
    log_p = [F.log_softmax(lg, dim=1) for lg in logits]
    p_bar = torch.stack([lp.exp() for lp in log_p]).mean(0)
    log_p_bar = p_bar.clamp_min(1e-20).log()
    # KL(p_bar || p_i) = sum_k p_bar (log p_bar - log p_i)
    kl = torch.stack([(p_bar * (log_p_bar - lp)).sum(1).mean() for lp in log_p]).mean()
    entropy = -(p_bar * log_p_bar).sum(1).mean()
    return ce + lam * kl + eta * entropy
