"""The Gaussian noise of randomized smoothing, reproducible per test image.

Noise is drawn from one ``torch.Generator`` per test image (seeded by the run's seed and the
image's index, ``image_seed``), in fixed-size chunks of ``noise_chunk`` samples, so the noise
an image sees depends neither on the batch size (a single ``randn`` call of another shape
would give other numbers) nor on how the test set is split into jobs, shards or resumes.
"""

from __future__ import annotations

import torch

DEFAULT_NOISE_CHUNK = 32
_SEED_STRIDE = 1_000_003  # prime; distinct image indices give distinct seeds for a given seed
_SEED_MODULUS = 2**32  # the CPU generator (mt19937) only uses the low 32 bits of a seed


def image_seed(seed: int, idx: int) -> int:
    """Seed of test image ``idx`` in a run seeded with ``seed``: deterministic, no ``hash()``.

    Results therefore do not depend on how the test set is split into jobs or shards.
    """
    if seed < 0 or idx < 0:
        raise ValueError(f"seed and image index must be >= 0, got seed={seed}, idx={idx}")
    return (seed * _SEED_STRIDE + idx) % _SEED_MODULUS


def image_generator(seed: int, idx: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded for test image ``idx``."""
    return torch.Generator(device=torch.device(device)).manual_seed(image_seed(seed, idx))


class NoiseStream:
    """Standard normal samples of one shape, drawn from ``generator`` in fixed-size chunks.

    ``take(k)`` returns the next k samples of the stream. Every chunk is one ``normal_`` call of
    ``chunk`` samples, so concatenating any sequence of ``take`` results gives the same numbers
    whatever the k's were: batch size changes speed, never the noise. At most ``chunk - 1``
    samples are carried over between calls, so memory stays bounded by batch + chunk.
    """

    def __init__(self, shape: tuple[int, ...], generator: torch.Generator, chunk: int,
                 dtype: torch.dtype = torch.float32):
        if chunk < 1:
            raise ValueError(f"noise chunk must be >= 1, got {chunk}")
        self.shape = tuple(shape)
        self.generator = generator
        self.device = generator.device
        self.chunk = chunk
        self.dtype = dtype
        self._carry: torch.Tensor | None = None

    def _new_chunk(self, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            out = torch.empty((self.chunk, *self.shape), dtype=self.dtype, device=self.device)
        return out.normal_(generator=self.generator)

    def take(self, k: int) -> torch.Tensor:
        """The next ``k`` samples, shape [k, *shape], on the generator's device."""
        out = torch.empty((k, *self.shape), dtype=self.dtype, device=self.device)
        filled = 0
        if self._carry is not None:
            used = min(k, len(self._carry))
            out[:used] = self._carry[:used]
            self._carry = self._carry[used:] if used < len(self._carry) else None
            filled = used
        while filled < k:
            if k - filled >= self.chunk:  # whole chunk: draw it in place, no copy
                self._new_chunk(out[filled:filled + self.chunk])
                filled += self.chunk
            else:
                chunk = self._new_chunk()
                used = k - filled
                out[filled:] = chunk[:used]
                self._carry = chunk[used:]
                filled = k
        return out

    def skip(self, k: int) -> None:
        """Draw the next ``k`` samples and drop them: the generator then stands where ``take(k)``
        would leave it (a selection stopped early still leaves the estimation samples where
        CERTIFY's are)."""
        while k > 0:
            piece = min(k, 64 * self.chunk)
            self.take(piece)
            k -= piece
