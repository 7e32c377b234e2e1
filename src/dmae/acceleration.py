"""What ``runtime.amp`` and ``runtime.compile`` mean on a device, for training and
certification alike."""

from __future__ import annotations

import torch

# The autocast dtype of each precision (None: no autocast); a certification records its name.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_SETTINGS = ("auto", "off", "fp32", "bf16", "fp16")  # runtime.amp, plus "fp32" = "off"


def resolve_precision(amp: str, device: torch.device | str) -> str:
    """The precision ``amp`` (``runtime.amp``) means on ``device``: "fp32", "bf16" or "fp16".

    "auto" is bf16 on CUDA (fp16 on a GPU before compute capability 8, which has no native
    bf16) and fp32 elsewhere, so a CPU run stays the exact fp32 computation; "off" (or
    "fp32") is fp32; "fp16" needs CUDA.
    """
    device = torch.device(device)
    if amp not in AMP_SETTINGS:
        raise ValueError(f"runtime.amp: {amp!r}; expected one of {', '.join(AMP_SETTINGS)}")
    if amp in ("off", "fp32") or (amp == "auto" and device.type != "cuda"):
        return "fp32"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"runtime.amp: 'fp16' needs a CUDA device, got {device}; expected "
                         "'auto', 'bf16' or 'off'")
    if amp == "auto":
        # Native bf16 from Ampere (compute capability 8) on; is_bf16_supported() also says
        # yes to the slow emulation on a V100 or T4, where fp16 is the fast choice.
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return amp


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype ``amp`` means on ``device``; None for fp32."""
    return PRECISIONS[resolve_precision(amp, device)]


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; off when ``dtype`` is None (fp32)."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device | str, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling, enabled for fp16 only (a disabled scaler passes everything through)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


def use_compile(setting: bool | str, device: torch.device | str) -> bool:
    """Whether ``setting`` (``runtime.compile``: true, false or "auto" = on CUDA only) asks
    for ``torch.compile`` on ``device``."""
    if setting not in (True, False, "auto"):
        raise ValueError(f"runtime.compile: {setting!r}; expected true, false or 'auto'")
    return setting is True or (setting == "auto" and torch.device(device).type == "cuda")
