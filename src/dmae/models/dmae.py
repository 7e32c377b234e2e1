"""The DMAE pretraining model: a masked autoencoder whose encoder sees a NOISY image.

Read top to bottom: ``patchify`` / ``unpatchify``, ``random_masking``, ``forward_encoder``,
``forward_decoder``, ``forward_loss``, ``forward``. Parameter names follow the MAE layout
(``patch_embed.proj.*``, ``cls_token``, ``pos_embed``, ``blocks.{i}.*``, ``norm.*``,
``decoder_embed.*``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks.*``,
``decoder_norm.*``, ``decoder_pred.*``) so the authors' checkpoints load by name, and the
encoder part loads into :class:`dmae.models.classifier.ViTClassifier` by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from dmae.models.common import (
    PixelNormalizer,
    add_gaussian_noise,
    check_choice,
    check_geometry,
    check_mask_ratio,
    check_mean_std,
    check_sigma,
    norm_layer,
    resize_to,
)
from dmae.models.pos_embed import fill_sincos_

LOSS_ON = ("all", "masked")


class DMAEPretrainModel(nn.Module):
    """Masked autoencoder with a ViT encoder and a light ViT decoder (MAE), plus input noise.

    Inputs are [0, 1] images. ``forward`` adds ``sigma * N(0, I)`` in pixel units, resizes
    (bicubic) to ``img_size`` if needed, normalizes, masks ``mask_ratio`` of the patches at
    random and asks the decoder for the CLEAN image. ``sigma = 0`` with ``loss_on="masked"``
    is plain MAE pretraining; the paper's DMAE is ``sigma = 0.25``, ``loss_on="all"``.

    Every argument is required: the architecture comes from a preset and the noise, masking
    and loss from a config's pretraining recipe (``dmae.models.presets.build_pretrain_model``).
    """

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        mean: Sequence[float],
        std: Sequence[float],
        sigma: float,
        mask_ratio: float,
        loss_on: str,
        norm_pix_loss: bool,
    ) -> None:
        super().__init__()
        check_geometry(img_size, patch_size, {"embed_dim": (embed_dim, num_heads),
                                              "decoder_embed_dim": (decoder_embed_dim,
                                                                    decoder_num_heads)})
        check_mean_std(mean, std, in_chans)
        check_sigma(sigma)
        check_mask_ratio(mask_ratio)
        check_choice("loss_on", loss_on, LOSS_ON)
        if not isinstance(norm_pix_loss, bool):
            raise ValueError(f"norm_pix_loss: expected true or false, got {norm_pix_loss!r}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.norm_pix_loss, self.loss_on = norm_pix_loss, loss_on
        self.sigma, self.mask_ratio = float(sigma), float(mask_ratio)
        self.normalizer = PixelNormalizer(mean, std)

        # Encoder (names as MAE / timm's VisionTransformer).
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim),
                                      requires_grad=False)  # fixed sin-cos
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(depth)])
        self.norm = norm_layer(embed_dim)

        # Decoder.
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)  # fixed sin-cos
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True,
                  norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)

        self.initialize_weights()

    # ----------------------------------------------------------------------------- setup
    def initialize_weights(self) -> None:
        """MAE initialisation: sin-cos tables, xavier everywhere, tokens N(0, 0.02)."""
        grid = self.patch_embed.grid_size
        fill_sincos_(self.pos_embed, grid)
        fill_sincos_(self.decoder_pos_embed, grid)
        # Treat the patch projection like a Linear layer on flattened patches.
        proj = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_linear_and_norm)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimizer should not decay (tokens and position embeddings)."""
        return {"cls_token", "pos_embed", "mask_token", "decoder_pos_embed"}

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    # ------------------------------------------------------------------------- patches
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, L, p*p*C]``, patches row-major, each patch (p, q, c)."""
        p, c = self.patch_size, self.in_chans
        b, _, h, w = imgs.shape
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        x = torch.einsum("bchpwq->bhwpqc", x)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify` for this model's (square) image size."""
        p, c = self.patch_size, self.in_chans
        gh, gw = self.patch_embed.grid_size
        b = x.shape[0]
        x = x.reshape(b, gh, gw, p, p, c)
        x = torch.einsum("bhwpqc->bchpwq", x)
        return x.reshape(b, c, gh * p, gw * p)

    # ------------------------------------------------------------------------- masking
    @staticmethod
    def random_masking(
        x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random ``round(L * (1 - mask_ratio))`` tokens per sample (at least one).

        Sorting uniform noise gives each sample its own shuffle; the first ``len_keep``
        shuffled tokens stay visible. Returns ``(x_visible [B, keep, D], mask [B, L]``
        with 1 on removed patches, ``ids_restore [B, L])`` where ``ids_restore`` inverts
        the shuffle: ``gather(shuffled, ids_restore)`` puts tokens back in patch order.
        """
        b, length, d = x.shape
        len_keep = max(1, round(length * (1 - mask_ratio)))
        if noise is None:
            noise = torch.rand(b, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(b, length, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # back to patch order
        return x_visible, mask, ids_restore

    # ------------------------------------------------------------------------- encoder
    def forward_encoder(
        self, x: torch.Tensor, mask_ratio: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalized image -> ``(latent [B, 1+keep, D], mask [B, L], ids_restore [B, L])``."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    # ------------------------------------------------------------------------- decoder
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Latent of visible tokens -> pixel predictions for every patch ``[B, L, p*p*C]``."""
        x = self.decoder_embed(latent)
        b, length = ids_restore.shape
        # Append one mask token per removed patch, then undo the shuffle (class token aside).
        mask_tokens = self.mask_token.expand(b, length + 1 - x.shape[1], -1)
        tokens = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:, :]

    # ---------------------------------------------------------------------------- loss
    def loss_target(self, clean: torch.Tensor) -> torch.Tensor:
        """Patchified regression target from the CLEAN normalized image.

        With ``norm_pix_loss`` each patch is standardized by its own mean and (unbiased,
        as MAE) variance + 1e-6.
        """
        target = self.patchify(clean)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_loss(
        self, clean: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """MSE to the clean target: mean over ALL patches (DMAE) or masked ones only (MAE).

        ``clean`` is the clean image at model size, already mean/std normalized.
        """
        per_patch = ((pred - self.loss_target(clean)) ** 2).mean(dim=-1)
        if self.loss_on == "all":
            return per_patch.mean()
        return (per_patch * mask).sum() / mask.sum().clamp_min(1)

    # ------------------------------------------------------------------------- forward
    def corrupt(self, imgs: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """[0, 1] images -> noisy images at model size, still in pixel units."""
        sigma = self.sigma if sigma is None else sigma
        return resize_to(add_gaussian_noise(imgs, sigma), self.patch_embed.img_size)

    def forward(
        self, imgs: torch.Tensor, sigma: float | None = None, mask_ratio: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[0, 1] images -> ``(loss, pred [B, L, p*p*C], mask [B, L])``.

        ``sigma`` / ``mask_ratio`` override the values set at construction for this call.
        """
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        clean = self.normalizer(resize_to(imgs, self.patch_embed.img_size))
        latent, mask, ids_restore = self.forward_encoder(
            self.normalizer(self.corrupt(imgs, sigma)), mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(clean, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(
        self, imgs: torch.Tensor, sigma: float | None = None, mask_ratio: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the illustration grid: ``(corrupted, reconstruction, mask)`` at model size.

        ``corrupted`` is the noisy [0, 1]-unit image the encoder saw, masked patches filled
        with the normalization mean (what a zero token means to the model). ``reconstruction``
        is the decoder output for every patch mapped back to pixel units; with
        ``norm_pix_loss`` each predicted patch is de-standardized with the CLEAN target's own
        per-patch mean/std (as MAE-style visualisations do), which leaks those two statistics
        of masked patches, so it is for illustration only. Nothing is clipped; clip for display.
        ``mask`` is ``[B, L]`` with 1 on removed patches.
        """
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        noisy = self.corrupt(imgs, sigma)
        clean = self.normalizer(resize_to(imgs, self.patch_embed.img_size))
        latent, mask, ids_restore = self.forward_encoder(self.normalizer(noisy), mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        if self.norm_pix_loss:
            patches = self.patchify(clean)
            mean = patches.mean(dim=-1, keepdim=True)
            std = (patches.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
            pred = pred * std + mean
        recon = self.normalizer.inverse(self.unpatchify(pred))
        mask_img = self.unpatchify(mask.unsqueeze(-1).expand(-1, -1, self.patch_size**2
                                                             * self.in_chans))
        corrupted = noisy * (1 - mask_img) + self.normalizer.mean * mask_img
        return corrupted, recon, mask


def _init_linear_and_norm(module: nn.Module) -> None:
    """Xavier-uniform Linear weights with zero bias; LayerNorm weight 1, bias 0 (as MAE)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
