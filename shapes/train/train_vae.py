"""Training of the shapes AutoencoderKL (the generator's VAE)."""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from common import Checkpointer, Progress, held_out_count, load_dataset, seed_everything, set_threads, to_unit_range


def build_model(channels: list[int], image_size: int) -> AutoencoderKL:
    levels = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=image_size,
    )


@torch.no_grad()
def evaluate(model: AutoencoderKL, images: torch.Tensor) -> dict:
    """Reconstruction error on held-out images, in 8-bit pixel units, and the
    standard deviation of the posterior means (for the latent scaling factor)."""
    model.eval()
    errors, means = [], []
    for start in range(0, images.shape[0], 128):
        pixels = to_unit_range(images[start : start + 128])
        posterior = model.encode(pixels).latent_dist
        reconstruction = model.decode(posterior.mean).sample.clamp(-1, 1)
        errors.append(((reconstruction - pixels).abs() * 127.5).mean().item())
        means.append(posterior.mean)
    model.train()
    latents = torch.cat(means)
    return {"mean_abs_error_8bit": sum(errors) / len(errors), "latent_std": latents.std().item()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=pathlib.Path, required=True, help="dataset written by `redraft shapes dataset`")
    parser.add_argument("--run", type=pathlib.Path, required=True, help="run folder: checkpoint, log, exported model")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--channels", type=str, default="32,32,64,64", help="block_out_channels; 2^(levels-1) is the down-sampling factor")
    parser.add_argument("--kl-weight", type=float, default=1e-6, help="KL weight; Stable Diffusion's VAE used 1e-6")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--save-every", type=int, default=250)
    args = parser.parse_args(argv)

    set_threads(args.threads)
    seed_everything(args.seed)
    data = load_dataset(args.data)
    channels = [int(value) for value in args.channels.split(",")]
    model = build_model(channels, data.images.shape[-1])
    print(f"VAE with {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)

    held_out_size = held_out_count(data.size, 512)
    held_out = data.images[-held_out_size:]
    train_size = data.size - held_out_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(args.steps // 50, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps)),
    )
    checkpointer = Checkpointer(args.run)
    step, _ = checkpointer.load({"model": model, "optimizer": optimizer, "schedule": schedule})
    generator = torch.Generator().manual_seed(args.seed + step)
    progress = Progress(args.run, args.steps, args.log_every)

    model.train()
    while step < args.steps:
        indices = torch.randint(train_size, (args.batch,), generator=generator)
        pixels = to_unit_range(data.images[indices])
        posterior = model.encode(pixels).latent_dist
        reconstruction = model.decode(posterior.sample(generator=generator)).sample
        # L1 keeps edges and colours sharp; MSE punishes the large errors of missing shapes.
        reconstruction_loss = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels)
        kl = posterior.kl().mean() / pixels[0].numel()
        loss = reconstruction_loss + args.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        progress.step(step, loss.item(), args.batch, kl=kl.item())
        if step % args.save_every == 0 or step == args.steps:
            checkpointer.save(step, {"model": model, "optimizer": optimizer, "schedule": schedule})
            print(f"step {step}: held-out {evaluate(model, held_out)}", flush=True)

    progress.close()
    result = evaluate(model, held_out)
    # Latents are scaled to unit variance, as Stable Diffusion's scaling_factor does.
    model.register_to_config(scaling_factor=1.0 / result["latent_std"])
    export = args.run / "export"
    model.save_pretrained(export, safe_serialization=True)
    summary = {"steps": step, **result, "scaling_factor": 1.0 / result["latent_std"]}
    (args.run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"exported {export}: {summary}", flush=True)


if __name__ == "__main__":
    main()
