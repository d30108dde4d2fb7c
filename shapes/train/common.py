"""Data loading, tokenisation and checkpointing shared by the trainers."""

from __future__ import annotations

import json
import os
import pathlib
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"

# CLIP's image normalisation (OpenAI CLIP preprocessing); the critic applies the same.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PromptTokenizer:
    """Encodes prompts to fixed-length ids exactly as redraft's Rust
    `PromptTokenizer` does: start and end tokens, truncation that keeps the
    end token last, padding with `<|pad|>`."""

    def __init__(self, path: pathlib.Path, max_len: int):
        self.tokenizer = Tokenizer.from_file(str(path))
        self.max_len = max_len
        self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)
        pad = self.tokenizer.token_to_id(PAD_TOKEN)
        self.pad_id = self.eos_id if pad is None else pad
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.max_len:
            ids = ids[: self.max_len]
            ids[-1] = self.eos_id
        return ids + [self.pad_id] * (self.max_len - len(ids))

    def encode_batch(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self.encode(text) for text in texts], dtype=torch.long)


@dataclass
class Dataset:
    """A rendered shapes dataset held in memory."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    prompts: list[str]
    categories: list[str]
    partial: list[list[str]]
    negatives: list[list[str]]
    negative_kinds: list[list[str]]  # NegativeKind names, parallel to `negatives`
    flawed: list[bool]  # whether the image contains flawed objects ("blobs") besides the prompt's
    styled: list[bool]  # whether some of the prompt's objects are drawn in a generator's style
    root: pathlib.Path

    @property
    def size(self) -> int:
        return len(self.prompts)


def load_dataset(root: pathlib.Path) -> Dataset:
    """Reads captions.jsonl and every image it names."""
    started = time.time()
    records = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines() if line]
    if not records:
        raise ValueError(f"{root / 'captions.jsonl'} lists no images")
    images = np.stack([np.asarray(Image.open(root / record["image"]).convert("RGB")) for record in records])
    print(f"loaded {len(records)} images from {root} in {time.time() - started:.1f} s", flush=True)
    return Dataset(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        prompts=[record["prompt"] for record in records],
        categories=[record["category"] for record in records],
        partial=[record["partial"] for record in records],
        negatives=[[negative["text"] for negative in record["negatives"]] for record in records],
        negative_kinds=[[negative["kind"] for negative in record["negatives"]] for record in records],
        flawed=[bool(record.get("flaws")) for record in records],
        styled=[bool(record.get("styles")) for record in records],
        root=root,
    )


def concat_datasets(first: Dataset, second: Dataset) -> Dataset:
    """Joins two datasets: the items of `first`, then those of `second`."""
    return Dataset(
        images=torch.cat([first.images, second.images]),
        prompts=first.prompts + second.prompts,
        categories=first.categories + second.categories,
        partial=first.partial + second.partial,
        negatives=first.negatives + second.negatives,
        negative_kinds=first.negative_kinds + second.negative_kinds,
        flawed=first.flawed + second.flawed,
        styled=first.styled + second.styled,
        root=first.root,
    )


def held_out_count(size: int, requested: int) -> int:
    """Returns how many images to keep out of training for evaluation:
    `requested`, or a fifth of a small dataset."""
    return max(1, min(requested, size // 5))


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) to float in [-1, 1], the VAE's input range."""
    return images.float() / 127.5 - 1.0


def clip_normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) to CLIP's normalised input."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def corrupt(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light noise, blur and colour shift on float images in [0, 255], so the
    critic also learns from images that look generated rather than rendered."""
    batch = images.shape[0]
    noise = torch.randn(images.shape, generator=generator) * 6.0
    shift = (torch.rand((batch, 3, 1, 1), generator=generator) - 0.5) * 8.0
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    use_blur = (torch.rand((batch, 1, 1, 1), generator=generator) < 0.5).float()
    mixed = use_blur * blurred + (1 - use_blur) * images
    return (mixed + noise + shift).clamp(0, 255)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


class Checkpointer:
    """Saves and restores model, optimiser, step and RNG state, so an
    interrupted run resumes where it stopped."""

    def __init__(self, run_dir: pathlib.Path):
        self.path = run_dir / "checkpoint.pt"
        run_dir.mkdir(parents=True, exist_ok=True)

    def save(self, step: int, modules: dict, extra: dict | None = None) -> None:
        state = {name: module.state_dict() for name, module in modules.items()}
        state["step"] = step
        state["torch_rng"] = torch.get_rng_state()
        state["numpy_rng"] = np.random.get_state()
        state["python_rng"] = random.getstate()
        state["extra"] = extra or {}
        temporary = self.path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(self.path)

    def load(self, modules: dict) -> tuple[int, dict]:
        if not self.path.exists():
            return 0, {}
        state = torch.load(self.path, weights_only=False)
        for name, module in modules.items():
            module.load_state_dict(state[name])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        print(f"resumed from {self.path} at step {state['step']}", flush=True)
        return state["step"], state.get("extra", {})


class Progress:
    """Logs loss and throughput every `every` steps, as JSON lines too."""

    def __init__(self, run_dir: pathlib.Path, total: int, every: int):
        self.log = (run_dir / "log.jsonl").open("a")
        self.total = total
        self.every = every
        self.window_start = time.time()
        self.window_losses: list[float] = []
        self.started = time.time()

    def step(self, step: int, loss: float, batch: int, **values: float) -> None:
        self.window_losses.append(loss)
        if step % self.every != 0 and step != self.total:
            return
        elapsed = time.time() - self.window_start
        mean = sum(self.window_losses) / len(self.window_losses)
        per_step = elapsed / len(self.window_losses)
        record = {
            "step": step,
            "loss": mean,
            "seconds_per_step": per_step,
            "samples_per_second": batch / per_step,
            "wall_seconds": time.time() - self.started,
            **values,
        }
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        extras = " ".join(f"{key} {value:.4f}" for key, value in values.items())
        print(
            f"step {step}/{self.total} loss {mean:.4f} {extras} {per_step:.2f} s/step {batch / per_step:.0f} samples/s",
            flush=True,
        )
        self.window_start = time.time()
        self.window_losses = []

    def close(self) -> None:
        self.log.close()
