"""Draws images with a trained generator folder for prompts of a rendered
dataset, so that `redraft shapes label` can caption them with what the
oracle reads and the critic's CLIP can learn the generator's drawings.

Writes OUT/images/*.png and OUT/samples.jsonl (image, prompt). Sampling
follows the generator's defaults in `redraft_generator.json`: DDIM with the
folder's scheduler and classifier-free guidance against the empty prompt.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel

from common import PromptTokenizer, set_threads


class Generator:
    """The parts of a diffusers-layout generator folder, in float32."""

    def __init__(self, folder: pathlib.Path):
        self.text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").float().eval()
        self.unet = UNet2DConditionModel.from_pretrained(folder / "unet").float().eval()
        self.vae = AutoencoderKL.from_pretrained(folder / "vae").float().eval()
        self.scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
        self.tokenizer = PromptTokenizer(
            folder / "tokenizer" / "tokenizer.json", self.text_encoder.config.max_position_embeddings
        )
        defaults = json.loads((folder / "redraft_generator.json").read_text())
        self.steps = int(defaults.get("steps", 20))
        self.guidance = float(defaults.get("guidance_scale", 2.0))

    @torch.no_grad()
    def draw(self, prompts: list[str], generator: torch.Generator) -> np.ndarray:
        """Returns (N, H, W, 3) uint8 images of `prompts`."""
        ids = self.tokenizer.encode_batch(prompts + [""])
        states = self.text_encoder(input_ids=ids).last_hidden_state
        cond, uncond = states[:-1], states[-1:].expand(len(prompts), -1, -1)
        context = torch.cat([uncond, cond])
        side = self.unet.config.sample_size
        latents = torch.randn((len(prompts), self.unet.config.in_channels, side, side), generator=generator)
        self.scheduler.set_timesteps(self.steps)
        latents = latents * self.scheduler.init_noise_sigma
        for timestep in self.scheduler.timesteps:
            noise = self.unet(torch.cat([latents, latents]), timestep, encoder_hidden_states=context).sample
            noise_uncond, noise_cond = noise.chunk(2)
            noise = noise_uncond + self.guidance * (noise_cond - noise_uncond)
            latents = self.scheduler.step(noise, timestep, latents).prev_sample
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generator", type=pathlib.Path, required=True, help="generator folder (diffusers layout)")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="dataset whose prompts to draw")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder to write images/ and samples.jsonl into")
    parser.add_argument("--count", type=int, default=6000, help="images to draw")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="seed of the prompt choice and of the noise")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for flag, value in (("--count", args.count), ("--batch", args.batch), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} {value} is invalid; it must be at least 1")
    set_threads(args.threads)

    records = [json.loads(line) for line in (args.data / "captions.jsonl").read_text().splitlines() if line]
    if not records:
        parser.error(f"{args.data / 'captions.jsonl'} lists no images")
    generator = torch.Generator().manual_seed(args.seed)
    picks = torch.randint(len(records), (args.count,), generator=generator).tolist()
    prompts = [records[pick]["prompt"] for pick in picks]

    model = Generator(args.generator)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    started = time.time()
    with (args.out / "samples.jsonl").open("w") as samples:
        for start in range(0, args.count, args.batch):
            batch = prompts[start : start + args.batch]
            for offset, (prompt, pixels) in enumerate(zip(batch, model.draw(batch, generator))):
                image = f"images/{start + offset:06d}.png"
                Image.fromarray(pixels).save(args.out / image)
                samples.write(json.dumps({"image": image, "prompt": prompt}) + "\n")
            done = min(start + args.batch, args.count)
            elapsed = time.time() - started
            print(f"drew {done}/{args.count} images, {done / elapsed:.1f} images/s", flush=True)
    print(f"wrote {args.count} images and {args.out / 'samples.jsonl'} in {time.time() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
