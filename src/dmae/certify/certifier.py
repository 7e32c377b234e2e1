"""The smoothed classifier that a certification method samples from: noisy copies of an image
through the base classifier, their votes counted on the device.

The smoothed classifier is g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), where f is any
``torch.nn.Module`` mapping a batch of [0,1] images [B,C,H,W] to logits [B,num_classes]. Noise is
added in [0,1] pixel space (the model normalizes internally) and is never clipped; it comes
from ``dmae.certify.noise``, per image and in fixed chunks.

The base classifier runs at the precision ``runtime.amp`` resolves to (``resolve_precision``:
fp32 on the CPU, bf16 autocast on CUDA by default) and, with ``runtime.compile``, through
``torch.compile``. Noise is drawn on the device and votes are tallied there: a certificate
costs one device-to-host transfer, not one per batch.
"""

from __future__ import annotations

import torch

from dmae.acceleration import PRECISIONS, autocast, resolve_precision, use_compile
from dmae.certify.base import Certificate, CertificationMethod, Prediction
from dmae.certify.checks import check_positive_float, check_positive_int
from dmae.certify.methods import get
from dmae.certify.noise import DEFAULT_NOISE_CHUNK, NoiseStream, image_generator


class Votes(torch.nn.Module):
    """The base classifier's predicted class of every image of a batch: the part of the
    sampling loop ``torch.compile`` gets, so the argmax can fuse into the head."""

    def __init__(self, base_classifier: torch.nn.Module):
        super().__init__()
        self.base_classifier = base_classifier

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.base_classifier(batch).argmax(dim=1)


class Certifier:
    """Smoothed classifier g around a base classifier f with Gaussian noise of std ``sigma``,
    certifying and predicting by ``method``.

    Noisy copies go through f ``batch_size`` at a time under ``torch.inference_mode`` and
    ``autocast`` at the precision ``amp`` resolves to (``self.precision``), through
    ``torch.compile`` when ``compile`` resolves to true (``self.compiled``); class counts are
    tallied on the device. The model is put in eval mode.
    """

    def __init__(self, method: CertificationMethod, base_classifier: torch.nn.Module,
                 num_classes: int,
                 sigma: float, *, batch_size: int = 1000,
                 device: torch.device | str | None = None,
                 noise_chunk: int = DEFAULT_NOISE_CHUNK, amp: str = "auto",
                 compile: bool | str = False):
        check_positive_float("sigma", sigma)
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_classes", num_classes)
        check_positive_int("noise_chunk", noise_chunk)
        if device is None:
            device = next(base_classifier.parameters(), torch.empty(0)).device
        self.method = method
        self.device = torch.device(device)
        self.base_classifier = base_classifier.eval()
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.batch_size = batch_size
        self.noise_chunk = noise_chunk
        self.precision = resolve_precision(amp, self.device)
        self.compiled = use_compile(compile, self.device)
        votes = Votes(self.base_classifier)
        # Compiled lazily, once per certifier: a second batch size (n0's, a last partial
        # batch) recompiles once into a dynamic-shape graph that serves every later size.
        self.votes = torch.compile(votes) if self.compiled else votes
        self._classes = torch.arange(num_classes, device=self.device)

    def certify(self, x: torch.Tensor, generator: torch.Generator,
                label: int | None = None) -> Certificate:
        """CERTIFY one image [C,H,W] by the method (``CertificationMethod.certify``)."""
        return self.method.certify(self, self._prepare(x, generator), generator, label)

    def predict(self, x: torch.Tensor, generator: torch.Generator) -> Prediction:
        """PREDICT one image [C,H,W] by the method (``CertificationMethod.predict``)."""
        return self.method.predict(self, self._prepare(x, generator), generator)

    def parameters(self) -> dict:
        """The method's name and parameters at this sigma (``CertificationMethod.parameters``)."""
        return self.method.parameters(self.sigma)

    def generator(self, seed: int, idx: int) -> torch.Generator:
        """The per-image generator on this classifier's device."""
        return image_generator(seed, idx, self.device)

    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator
                      ) -> torch.Tensor:
        """Class counts (a long tensor on the device) of f over ``num`` noisy copies of x.

        The noise is a fresh stream, so every call starts at a chunk boundary of ``generator``.
        """
        return self.count_from(self.noise(x, generator), x, num)

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> NoiseStream:
        """A fresh noise stream for images shaped like x, starting at a chunk boundary."""
        return NoiseStream(tuple(x.shape), generator, self.noise_chunk)

    def count_from(self, stream: NoiseStream, x: torch.Tensor, num: int) -> torch.Tensor:
        """Class counts of f over the next ``num`` samples of ``stream`` added to x."""
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        for predictions in self._predictions(stream, x, num):
            # Not bincount: on CUDA it reads the largest class back to size its output,
            # a host sync every batch. Comparing with every class costs B x C flags.
            counts += (predictions.unsqueeze(1) == self._classes).sum(dim=0)
        return counts

    def votes_from(self, stream: NoiseStream, x: torch.Tensor, num: int) -> torch.Tensor:
        """The class f gives each of the next ``num`` samples of ``stream``, in order (what a
        record of the votes keeps, to replay any method on them)."""
        return torch.cat([*self._predictions(stream, x, num),
                          torch.empty(0, dtype=torch.long, device=self.device)])

    def _predictions(self, stream: NoiseStream, x: torch.Tensor, num: int):
        with torch.inference_mode(), autocast(self.device, PRECISIONS[self.precision]):
            remaining = num
            while remaining > 0:
                size = min(self.batch_size, remaining)
                yield self.votes(stream.take(size).mul_(self.sigma).add_(x))
                remaining -= size

    @staticmethod
    def skip(stream: NoiseStream, num: int) -> None:
        """Pass over the next ``num`` samples of ``stream`` without classifying them."""
        stream.skip(num)

    @staticmethod
    def selected_votes(selection: torch.Tensor, counts: torch.Tensor) -> tuple[int, int]:
        """The class ``selection`` counts most often and its count in ``counts``."""
        c_hat = selection.argmax(dim=0, keepdim=True)  # stays on the device: the only host
        # transfer is below (counts[c_hat] with a 0-dim index would read c_hat back first)
        c_hat, n_a = torch.cat([c_hat, counts.gather(0, c_hat)]).tolist()
        return int(c_hat), n_a

    @staticmethod
    def top_two(counts: torch.Tensor) -> tuple[int, int, int]:
        """The most frequent class, its count and the runner-up's count (0 for one class)."""
        top2 = torch.topk(counts, k=min(2, len(counts)))
        values, classes = torch.stack([top2.values, top2.indices]).tolist()  # one transfer
        return int(classes[0]), values[0], values[1] if len(values) > 1 else 0

    def _prepare(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if generator.device.type != self.device.type or (
                self.device.index is not None and generator.device != self.device):
            raise ValueError(f"generator is on {generator.device} but the classifier runs on "
                             f"{self.device}; make it with the certifier's generator()")
        if x.dim() != 3:
            raise ValueError(f"expected one image [C,H,W], got shape {list(x.shape)}")
        return x.to(self.device, torch.float32)


def build_certifier(method: str, base_classifier: torch.nn.Module, num_classes: int,
                    sigma: float, *, batch_size: int = 1000,
                    device: torch.device | str | None = None,
                    noise_chunk: int = DEFAULT_NOISE_CHUNK, amp: str = "auto",
                    compile: bool | str = False, **settings) -> Certifier:
    """The certifier of ``method`` (config ``certify.method``) with its ``settings`` (n0, n,
    alpha and its own keys of ``certify``), every setting checked."""
    return Certifier(get(method)(**settings), base_classifier, num_classes, sigma,
                     batch_size=batch_size, device=device, noise_chunk=noise_chunk, amp=amp,
                     compile=compile)
