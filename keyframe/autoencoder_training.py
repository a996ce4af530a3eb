"""Training the frame autoencoder: its losses (edge-weighted L1, Sobel-gradient L1, KL), a
PatchGAN discriminator, and `AutoencoderModule`, the LightningModule that `animatic train
autoencoder` runs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from keyframe.autoencoder import FrameAutoencoder, batch_images, measure_scale
from keyframe.autoencoder_files import autoencoder_record, load_autoencoder
from keyframe.errors import UserError
from keyframe.frame_metrics import psnr
from keyframe.layers import group_norm


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over latent elements."""
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).mean()


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Sobel x and y gradients of each channel: (b, 2c, h, w)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    c = x.shape[1]
    kernel = torch.stack([kx, kx.t()])[:, None].to(x).repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)


def sobel_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel image gradients: keeps flat-colour edges sharp with no pretrained net."""
    return (sobel(pred) - sobel(target)).abs().mean()


def edge_weighted_l1(pred: torch.Tensor, target: torch.Tensor, strength: float) -> torch.Tensor:
    """L1 with pixels near the target's edges weighted up to 1 + strength (normalised per image,
    mean weight 1): outlines of small objects, which decide their shape, count as much as the
    large flat areas around them."""
    if strength <= 0:
        return (pred - target).abs().mean()
    with torch.no_grad():
        edges = sobel(target).abs().sum(1, keepdim=True)
        edges = F.max_pool2d(edges, 3, stride=1, padding=1)
        edges = edges / edges.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        weight = 1 + strength * edges
        weight = weight / weight.mean(dim=(2, 3), keepdim=True)
    return (weight * (pred - target).abs()).mean()


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017) with GroupNorm: one logit per image patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, num_layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), group_norm(out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AutoencoderModule(L.LightningModule):
    """Trains a FrameAutoencoder on `batch["image"]`: L1 (edge-weighted with `edge_weight`) +
    Sobel-gradient L1 + KL, optionally a hinge PatchGAN loss with LDM's adaptive weight after
    `disc_start` steps. The latent scale is
    measured on the validation set each validation epoch and on `scale_batches` training batches
    when fitting ends, so checkpoints and exports carry it.

    `init_from` starts from a trained autoencoder (any `load_autoencoder` path); with
    `freeze_encoder` only the decoder trains and the latent space (and its scale) stays exactly as
    it was, so diffusion models already trained on those latents keep working with the new decoder.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        mid_attention: bool = True,
        norm_groups: int = 32,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        kl_weight: float = 1e-6,
        gradient_weight: float = 1.0,
        edge_weight: float = 0.0,
        sample_posterior: bool = True,
        disc_weight: float = 0.0,
        disc_start: int = 0,
        disc_channels: int = 64,
        scale_batches: int = 16,
        init_from: str | None = None,
        freeze_encoder: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.autoencoder = FrameAutoencoder(
            in_channels, latent_channels, base_channels, list(channel_mult), num_res_blocks,
            mid_attention, norm_groups,
        )  # fmt: skip
        if init_from is not None:
            self._load_initial(init_from)
        if freeze_encoder:
            self.autoencoder.encoder.requires_grad_(False)
        self.discriminator = PatchDiscriminator(in_channels, disc_channels) if disc_weight else None
        self.automatic_optimization = self.discriminator is None
        self._val_stats = torch.zeros(3, dtype=torch.float64)

    def _load_initial(self, path: str) -> None:
        source = load_autoencoder(path)
        if autoencoder_record(source)["config"] | {"scale_factor": 0, "shift": 0} != (
            autoencoder_record(self.autoencoder)["config"] | {"scale_factor": 0, "shift": 0}
        ):
            raise UserError(
                f"{path}: init_from autoencoder has config {source.config()}, but this model is "
                f"{self.autoencoder.config()} (the architecture arguments must match)"
            )
        self.autoencoder.load_state_dict(source.state_dict())

    def train(self, mode: bool = True) -> AutoencoderModule:
        """A frozen encoder stays in eval mode."""
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.autoencoder.encoder.eval()
        return self

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.autoencoder.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=hp.lr, betas=(0.9, 0.99), weight_decay=hp.weight_decay)
        if self.discriminator is None:
            return opt
        opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=hp.lr, betas=(0.5, 0.9))
        return [opt, opt_d]

    def _reconstruct(self, x: torch.Tensor, sample: bool):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.hparams.freeze_encoder):
            mean, logvar = self.autoencoder.encode_moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        return self.autoencoder._decode_frames(z), mean, logvar

    def _losses(self, x: torch.Tensor, rec: torch.Tensor, mean, logvar) -> dict:
        hp = self.hparams
        l1 = (rec - x).abs().mean()
        grad = sobel_l1(rec, x)
        kl = kl_divergence(mean, logvar)
        pixel = edge_weighted_l1(rec, x, hp.edge_weight) if hp.edge_weight else l1
        rec_loss = pixel + hp.gradient_weight * grad
        return {
            "l1": l1,
            "grad": grad,
            "kl": kl,
            "rec": rec_loss,
            "loss": rec_loss + hp.kl_weight * kl,
        }

    def _adaptive_weight(self, rec_loss: torch.Tensor, g_loss: torch.Tensor) -> torch.Tensor:
        """LDM/VQGAN: balance the GAN term against reconstruction at the decoder's last layer."""
        last = self.autoencoder.decoder.conv_out.weight
        g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
        g_gan = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        weight = g_rec.norm() / (g_gan.norm() + 1e-4)
        return weight.clamp(0.0, 1e4).detach() * self.hparams.disc_weight

    def training_step(self, batch, batch_idx):
        x = batch_images(batch)
        rec, mean, logvar = self._reconstruct(x, self.hparams.sample_posterior)
        losses = self._losses(x, rec, mean, logvar)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items() if k != "rec"}, prog_bar=False
        )
        self.log("train/psnr", psnr(rec.detach(), x), prog_bar=True)
        if self.discriminator is None:
            return losses["loss"]

        opt, opt_d = self.optimizers()
        loss = losses["loss"]
        gan_on = self.global_step // 2 >= self.hparams.disc_start  # two optimizer steps per batch
        if gan_on:
            g_loss = -self.discriminator(rec).mean()
            weight = self._adaptive_weight(losses["rec"], g_loss)
            loss = loss + weight * g_loss
            self.log_dict({"train/g_loss": g_loss.detach(), "train/d_weight": weight})
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        if gan_on:
            real, fake = self.discriminator(x), self.discriminator(rec.detach())
            d_loss = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            self.log("train/d_loss", d_loss.detach())
        else:
            opt_d.step()  # keeps global_step counting two optimizer steps per batch
        return None

    def on_validation_epoch_start(self) -> None:
        self._val_stats.zero_()

    def validation_step(self, batch, batch_idx):
        x = batch_images(batch)
        rec, mean, logvar = self._reconstruct(x, sample=False)
        losses = self._losses(x, rec, mean, logvar)
        self.log("val/l1", losses["l1"], prog_bar=True)
        self.log("val/psnr", psnr(rec, x), prog_bar=True)
        self.log("val/loss", losses["loss"])
        m = mean.detach().double().cpu()
        self._val_stats += torch.stack([m.sum(), (m**2).sum(), torch.tensor(m.numel())])

    def on_validation_epoch_end(self) -> None:
        total, total_sq, count = self._val_stats.tolist()
        if self.trainer.sanity_checking or count == 0 or self.hparams.freeze_encoder:
            return
        if self.trainer.world_size > 1:
            stats = self.all_gather(self._val_stats.to(self.device)).reshape(-1, 3).sum(0)
            total, total_sq, count = stats.tolist()
        mu = total / count
        self.autoencoder.shift = mu
        self.autoencoder.scale_factor = 1.0 / math.sqrt(max(total_sq / count - mu**2, 1e-12))
        self.log_dict({"latent/scale_factor": self.autoencoder.scale_factor})

    def on_fit_end(self) -> None:
        loader = getattr(self.trainer, "train_dataloader", None)
        if loader is None or self.hparams.scale_batches <= 0 or self.hparams.freeze_encoder:
            return
        was_training = self.autoencoder.training
        self.autoencoder.eval()
        measure_scale(self.autoencoder, loader, max_batches=self.hparams.scale_batches)
        self.autoencoder.train(was_training)
