"""What ``runtime.amp`` means on a device, for training and certification alike."""

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
