"""Stage 1's trainer: the conversions between the data's [0, 1] and MedVAE's
[-1, 1], the discriminator's initialisation, and :class:`Stage1Trainer` (generator and
discriminator steps, branching, encoding and reconstruction)."""

from __future__ import annotations

import copy

import torch
from monai.networks.nets import PatchDiscriminator

from ..losses import (
    adaptive_adv_weight,
    hinge_d_loss,
    hinge_g_loss,
    kl_loss,
    perceptual_loss,
    reconstruction_nll,
)
from ..models import build_autoencoder, decoder_output_layer, get_config
from ..training import CheckpointedTrainer
from .settings import Stage1Config


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images (what the data pipeline and the metrics use) to MedVAE's [-1, 1]."""
    return x * 2.0 - 1.0


def from_model_range(y: torch.Tensor) -> torch.Tensor:
    """The decoder's [-1, 1] output back to [0, 1], clipped."""
    return ((y + 1.0) / 2.0).clamp(0.0, 1.0)


def init_discriminator_weights(module: torch.nn.Module) -> None:
    """taming-transformers' ``weights_init`` (used by MedVAE): conv weights N(0, 0.02), norm scales N(1, 0.02)."""
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        torch.nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        torch.nn.init.normal_(module.weight, 1.0, 0.02)
        torch.nn.init.zeros_(module.bias)


class Stage1Trainer(CheckpointedTrainer):
    """Generator (:class:`~medvae_lib.models.MedVAE`), discriminator, their optimisers
    and losses. Stage 1 trains the whole autoencoder except stage 2's head.

    ``fit`` (checkpoint, resume, data identity, non-finite guard) comes from
    :class:`~medvae_lib.training.CheckpointedTrainer`; it takes images in ``[0, 1]``.
    """

    def __init__(self, config: Stage1Config, device: torch.device | str = "cpu"):
        super().__init__(config, device)
        self.name = f"stage 1 {config.model}"
        dims = get_config(config.model).spatial_dims
        torch.manual_seed(config.seed)
        self.autoencoder = build_autoencoder(config.model, width=config.width).to(
            self.device
        )
        self.discriminator = PatchDiscriminator(
            spatial_dims=dims,
            num_layers_d=config.disc_layers,
            channels=config.disc_channels,
            in_channels=1,
        ).to(self.device)
        self.discriminator.apply(init_discriminator_weights)
        betas = (config.adam_beta1, config.adam_beta2)
        self.autoencoder.channel_ds.requires_grad_(False)  # stage 2's head
        self.autoencoder.channel_proj.requires_grad_(False)
        self.opt_g = torch.optim.Adam(
            [p for p in self.autoencoder.parameters() if p.requires_grad],
            lr=config.lr,
            betas=betas,
        )
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.lr_d, betas=betas
        )
        self.perceptual = perceptual_loss(config.perceptual, dims).to(self.device)

    def modules(self):
        return {"autoencoder": self.autoencoder, "discriminator": self.discriminator}

    def optimizers(self):
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def check_images(self, images: torch.Tensor) -> None:
        cfg = get_config(self.config.model)
        if images.ndim != cfg.spatial_dims + 2 or images.shape[1] != 1:
            raise ValueError(
                f"{cfg.name} trains on (N, 1, *spatial) images; got shape {tuple(images.shape)}"
            )
        cfg.latent_shape(tuple(images.shape[2:]))  # raises if a side does not divide
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"stage 1 trains on images scaled to [0, 1]; these span [{lo:.3g}, {hi:.3g}]"
            )

    def adversarial(self, step: int) -> bool:
        return self.config.adv_weight > 0 and step >= self.config.adv_start

    # -- one optimisation step: the generator, then the discriminator ------------------------------
    def generator_step(
        self, x: torch.Tensor, step: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One autoencoder update on a batch ``x`` in [-1, 1]; the discriminator's
        weights are not touched (its parameters are frozen during this step). Returns
        the logs and the detached reconstructions."""
        c = self.config
        self.autoencoder.train()
        self.discriminator.train()
        self.opt_g.zero_grad(set_to_none=True)
        scaler = self.scaler("generator")
        with self.autocast():
            x_hat, z_mu, z_sigma = self.autoencoder(x)
            perc = self.perceptual(x_hat, x)
            nll = reconstruction_nll(x, x_hat, perc, c.perceptual_weight)
            kl = kl_loss(z_mu.float(), z_sigma.float())
            loss = nll + c.kl_weight * kl
        logs = {
            "l1": (x_hat - x).abs().mean().detach().float() / 2,
            "perceptual": perc.detach().float(),
            "kl": kl.detach(),
        }
        if self.adversarial(step):
            self.discriminator.requires_grad_(False)
            # The discriminator runs in training mode, as in its own step, but its
            # batch-norm running
            # statistics are put back afterwards: this step changes nothing of the
            # discriminator.
            buffers = {k: v.clone() for k, v in self.discriminator.named_buffers()}
            try:
                with self.autocast():
                    logits = self.discriminator(torch.cat([x, x_hat]).contiguous())[-1]
                    adv_g = hinge_g_loss(logits[len(x) :].float())
                weight = torch.tensor(c.adv_weight)
                if c.adaptive_adv:
                    # under float16 the balance is taken of the scaled losses, whose
                    # gradients do not underflow; the scale cancels in the ratio
                    weight = weight * adaptive_adv_weight(
                        scaler.scale(nll),
                        scaler.scale(adv_g),
                        decoder_output_layer(self.autoencoder),
                        eps=1e-4 * scaler.get_scale(),  # 1 unless float16
                    )
                loss = loss + weight * adv_g
                # before the buffers are put back: the graph holds them
                skipped = self.backward_step(loss, "generator")
            finally:
                self.discriminator.requires_grad_(True)
                with torch.no_grad():
                    for k, v in self.discriminator.named_buffers():
                        v.copy_(buffers[k])
            logs.update(adv_g=adv_g.detach(), adv_weight=weight.detach())
        else:
            skipped = self.backward_step(loss, "generator")
        logs.update(skipped)
        return logs, x_hat.detach()

    def discriminator_step(
        self, x: torch.Tensor, x_hat: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One discriminator update: real and reconstructed images in one batch, hinge loss."""
        self.discriminator.train()
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.discriminator(torch.cat([x, x_hat.detach()]).contiguous())[-1]
        logits = logits.float()
        logits_real, logits_fake = logits[: len(x)], logits[len(x) :]
        loss_d = hinge_d_loss(logits_real, logits_fake)
        skipped = self.backward_step(loss_d, "discriminator")
        return {
            "d_loss": loss_d.detach(),
            "logit_real": logits_real.mean().detach(),
            "logit_fake": logits_fake.mean().detach(),
            **{f"d_{k}": v for k, v in skipped.items()},
        }

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        x = to_model_range(batch)
        if self.adversarial(step) and self.config.alternate_updates and step % 2:
            with torch.no_grad(), self.autocast():  # MedVAE's odd batches: D only
                self.autoencoder.train()
                x_hat = self.autoencoder(x)[0]
            return self.discriminator_step(x, x_hat)
        logs, x_hat = self.generator_step(x, step)
        if self.adversarial(step) and not self.config.alternate_updates:
            logs.update(self.discriminator_step(x, x_hat))
        return logs

    def branch(self, config: Stage1Config) -> Stage1Trainer:
        """A copy of this trainer (weights, optimiser states, step, history) that goes on with
        ``config``: the ablation's two arms continue from one warm-up on the same batches."""
        other = Stage1Trainer(config, self.device)
        for name, module in other.modules().items():
            module.load_state_dict(copy.deepcopy(self.modules()[name].state_dict()))
        for name, opt in other.optimizers().items():
            settings = [
                {k: v for k, v in group.items() if k != "params"}
                for group in opt.param_groups
            ]
            opt.load_state_dict(copy.deepcopy(self.optimizers()[name].state_dict()))
            for group, mine in zip(
                opt.param_groups, settings, strict=True
            ):  # the moments are copied, lr and betas are the new config's
                group.update(mine)
        for name, scaler in self.scalers.items():  # float16: the scale reached so far
            other.scaler(name).load_state_dict(scaler.state_dict())
        other.step, other.history = self.step, copy.deepcopy(self.history)
        other.data_identity = copy.deepcopy(self.data_identity)
        return other

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, images: torch.Tensor, batch_size: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of ``images`` in [0, 1]."""
        self.autoencoder.eval()
        mus, sigmas = [], []
        for chunk in images.split(batch_size):
            mu, sigma = self.autoencoder.encode(to_model_range(chunk.to(self.device)))
            mus.append(mu.cpu())
            sigmas.append(sigma.cpu())
        return torch.cat(mus), torch.cat(sigmas)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Decode the posterior mean (no sampling): deterministic reconstructions in [0, 1]."""
        self.autoencoder.eval()
        out = []
        for chunk in images.split(batch_size):
            z_mu, _ = self.autoencoder.encode(to_model_range(chunk.to(self.device)))
            out.append(from_model_range(self.autoencoder.decode(z_mu)).cpu())
        return torch.cat(out)
