"""Training of the shapes UNet2DConditionModel on the VAE's latents,
conditioned on the CLIP text tower's hidden states."""

from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPModel

from common import Checkpointer, Progress, PromptTokenizer, load_dataset, seed_everything, set_threads, to_unit_range

# Stable Diffusion's training noise schedule (scaled_linear betas from 0.00085 to 0.012, 1000 steps).
NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
PROMPT_DROPOUT = 0.1  # share of prompts replaced by "" so classifier-free guidance works
MIN_SNR_GAMMA = 5.0  # min-SNR loss weighting (Hang et al. 2023), gamma as the paper recommends


def build_model(sample_size: int, channels: list[int], cross_attention_dim: int, heads: int, layers: int) -> UNet2DConditionModel:
    levels = len(channels)
    down = ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=layers,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads,
        norm_num_groups=32,
    )


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Posterior means of every image, as redraft's generator encodes init images."""
    chunks = []
    for start in range(0, images.shape[0], 256):
        chunks.append(vae.encode(to_unit_range(images[start : start + 256])).latent_dist.mean)
    return torch.cat(chunks)


@torch.no_grad()
def encode_prompts(clip: CLIPModel, tokenizer: PromptTokenizer, prompts: list[str]) -> torch.Tensor:
    """Last hidden states of the text tower, as the generator's text encoder computes them."""
    chunks = []
    for start in range(0, len(prompts), 256):
        ids = tokenizer.encode_batch(prompts[start : start + 256])
        chunks.append(clip.text_model(input_ids=ids).last_hidden_state)
    return torch.cat(chunks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=pathlib.Path, required=True, help="dataset written by `redraft shapes dataset`")
    parser.add_argument("--clip", type=pathlib.Path, required=True, help="exported CLIP folder (train_clip.py)")
    parser.add_argument("--vae", type=pathlib.Path, required=True, help="exported VAE folder (train_vae.py)")
    parser.add_argument("--run", type=pathlib.Path, required=True, help="run folder: checkpoint, log, exported model")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--channels", type=str, default="64,128,128")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=1, help="layers_per_block")
    parser.add_argument("--ema", type=float, default=0.999, help="decay of the exported exponential moving average")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--save-every", type=int, default=250)
    args = parser.parse_args(argv)

    set_threads(args.threads)
    seed_everything(args.seed)
    data = load_dataset(args.data)
    # Images with flawed or styled objects teach the critic what is and is not
    # an object. The generator learns only from plain renders of the prompt.
    usable = [index for index in range(data.size) if not data.flawed[index] and not data.styled[index]]
    images = data.images[usable]
    prompts = [data.prompts[index] for index in usable]
    print(f"training on the {len(usable)} images without flawed or styled objects", flush=True)
    clip = CLIPModel.from_pretrained(args.clip).float().eval()
    vae = AutoencoderKL.from_pretrained(args.vae).float().eval()
    tokenizer = PromptTokenizer(args.data / "tokenizer.json", clip.config.text_config.max_position_embeddings)

    # Precompute the frozen encoders' outputs once.
    latents = encode_latents(vae, images) * vae.config.scaling_factor
    unique_prompts = sorted(set(prompts)) + [""]
    prompt_index = {prompt: index for index, prompt in enumerate(unique_prompts)}
    text_states = encode_prompts(clip, tokenizer, unique_prompts)
    prompt_ids = torch.tensor([prompt_index[prompt] for prompt in prompts])
    empty_id = prompt_index[""]
    print(f"latents {tuple(latents.shape)} std {latents.std():.3f}; {len(unique_prompts)} distinct prompts", flush=True)

    channels = [int(value) for value in args.channels.split(",")]
    model = build_model(latents.shape[-1], channels, clip.config.text_config.hidden_size, args.heads, args.layers)
    ema = copy.deepcopy(model).requires_grad_(False)
    print(f"UNet with {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)

    scheduler = DDPMScheduler(**NOISE_SCHEDULE, prediction_type="epsilon")
    alphas_cumprod = scheduler.alphas_cumprod
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(args.steps // 50, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps))),
    )
    checkpointer = Checkpointer(args.run)
    modules = {"model": model, "ema": ema, "optimizer": optimizer, "schedule": schedule}
    step, _ = checkpointer.load(modules)
    generator = torch.Generator().manual_seed(args.seed + step)
    progress = Progress(args.run, args.steps, args.log_every)

    model.train()
    while step < args.steps:
        indices = torch.randint(len(usable), (args.batch,), generator=generator)
        clean = latents[indices]
        conditions = prompt_ids[indices].clone()
        conditions[torch.rand(args.batch, generator=generator) < PROMPT_DROPOUT] = empty_id
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, NOISE_SCHEDULE["num_train_timesteps"], (args.batch,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        prediction = model(noisy, timesteps, encoder_hidden_states=text_states[conditions]).sample

        snr = alphas_cumprod[timesteps] / (1 - alphas_cumprod[timesteps])
        weights = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
        loss = (F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)) * weights).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for average, current in zip(ema.parameters(), model.parameters()):
                average.lerp_(current, 1 - decay)
        step += 1
        progress.step(step, loss.item(), args.batch, lr=schedule.get_last_lr()[0])
        if step % args.save_every == 0 or step == args.steps:
            checkpointer.save(step, modules)

    progress.close()
    export = args.run / "export"
    ema.save_pretrained(export, safe_serialization=True)
    (args.run / "summary.json").write_text(json.dumps({"steps": step, "images": len(usable)}, indent=2) + "\n")
    print(f"exported {export}", flush=True)


if __name__ == "__main__":
    main()
