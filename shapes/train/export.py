"""Assembles the trained CLIP, VAE and UNet into the two model folders
redraft loads: a diffusers-layout generator and an HF CLIP critic."""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPModel

from train_unet import NOISE_SCHEDULE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=pathlib.Path, required=True, help="the dataset (for tokenizer.json)")
    parser.add_argument("--clip", type=pathlib.Path, required=True, help="exported CLIP folder: the generator's text encoder, and the critic unless --critic-clip is given")
    parser.add_argument("--critic-clip", type=pathlib.Path, help="exported CLIP folder for the critic, for example one fine-tuned on drawn images")
    parser.add_argument("--vae", type=pathlib.Path, required=True, help="exported VAE folder")
    parser.add_argument("--unet", type=pathlib.Path, required=True, help="exported UNet folder")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output folder, for example models/shapes-v1")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--steps", type=int, default=20, help="default denoising steps of the generator")
    parser.add_argument("--guidance", type=float, default=2.0, help="default guidance scale of the generator")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    tokenizer = args.data / "tokenizer.json"

    # Critic: the whole CLIP model, its calibration and the tokenizer.
    critic = args.out / "critic"
    critic_clip = args.critic_clip or args.clip
    CLIPModel.from_pretrained(critic_clip).float().to(dtype).save_pretrained(critic, safe_serialization=True)
    shutil.copy(critic_clip / "redraft_critic.json", critic / "redraft_critic.json")
    shutil.copy(tokenizer, critic / "tokenizer.json")
    clip = CLIPModel.from_pretrained(args.clip).float()

    # Generator: CLIP's text tower as the text encoder, as in Stable Diffusion.
    generator = args.out / "generator"
    # Tensor names carry the `text_model.` prefix of the Hub's SD folders,
    # which transformers 5 no longer writes for a bare CLIPTextModel.
    text_folder = generator / "text_encoder"
    text_folder.mkdir(parents=True, exist_ok=True)
    clip.config.text_config.architectures = ["CLIPTextModel"]
    clip.config.text_config.save_pretrained(text_folder)
    tensors = {f"text_model.{name}": tensor.to(dtype).contiguous() for name, tensor in clip.text_model.state_dict().items()}
    save_file(tensors, text_folder / "model.safetensors", metadata={"format": "pt"})
    (generator / "tokenizer").mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer, generator / "tokenizer" / "tokenizer.json")
    UNet2DConditionModel.from_pretrained(args.unet).to(dtype).save_pretrained(generator / "unet", safe_serialization=True)
    AutoencoderKL.from_pretrained(args.vae).to(dtype).save_pretrained(generator / "vae", safe_serialization=True)
    DDIMScheduler(**NOISE_SCHEDULE, prediction_type="epsilon", steps_offset=1, clip_sample=False, set_alpha_to_one=False).save_pretrained(
        generator / "scheduler"
    )
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (generator / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    defaults = {"steps": args.steps, "guidance_scale": args.guidance}
    (generator / "redraft_generator.json").write_text(json.dumps(defaults, indent=2) + "\n")
    size = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
