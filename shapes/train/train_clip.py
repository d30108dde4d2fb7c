"""Contrastive training of the shapes CLIP model (critic, and the
generator's text encoder)."""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from common import (
    Checkpointer,
    Progress,
    PromptTokenizer,
    clip_normalise,
    concat_datasets,
    corrupt,
    held_out_count,
    load_dataset,
    seed_everything,
    set_threads,
)

MAX_TOKENS = 32
NEGATIVES_PER_IMAGE = 2


def build_model(tokenizer: PromptTokenizer, width: int, layers: int, heads: int, image_size: int, patch: int) -> CLIPModel:
    text = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="quick_gelu",
        projection_dim=width,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=2,
        eos_token_id=tokenizer.eos_id,
    )
    vision = dict(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch,
        hidden_act="quick_gelu",
        projection_dim=width,
    )
    # logit_scale_init_value is ln(1 / 0.07), CLIP's initial temperature.
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=width, logit_scale_init_value=2.6592)
    return CLIPModel(config)


def features(output) -> torch.Tensor:
    """Projected features: transformers 5 returns them as `pooler_output`, older versions as a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def embed_texts(model: CLIPModel, tokenizer: PromptTokenizer, texts: list[str]) -> torch.Tensor:
    ids = tokenizer.encode_batch(texts)
    return F.normalize(features(model.get_text_features(input_ids=ids)), dim=-1)


def embed_images(model: CLIPModel, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(features(model.get_image_features(pixel_values=images)), dim=-1)


# Negative kinds every image that has them trains on at each step. A
# relation is a single word of the caption, and with it drawn at random
# alongside the other kinds the first model scored relations at chance. A
# flawed object counted as the object it resembles is what the critic must
# reject in generated images, and only some images have one.
ALWAYS_KINDS = ("opposite_relation", "counted_flaw")


def pick_negatives(negatives: list[str], kinds: list[str], generator: torch.Generator) -> list[str]:
    """NEGATIVES_PER_IMAGE negatives: those of ALWAYS_KINDS when there are
    any, the rest at random, repeating when there are fewer."""
    picked = [text for text, kind in zip(negatives, kinds) if kind in ALWAYS_KINDS][:NEGATIVES_PER_IMAGE]
    rest = [text for text, kind in zip(negatives, kinds) if kind not in ALWAYS_KINDS] or negatives
    order = torch.randperm(len(rest), generator=generator).tolist()
    index = 0
    while len(picked) < NEGATIVES_PER_IMAGE:
        picked.append(rest[order[index % len(rest)]])
        index += 1
    return picked


# Words a mirror image swaps, per axis. A horizontal mirror keeps every
# shape of the world, because the triangle is symmetric about its vertical
# axis. A vertical one would turn triangles upside down, so scenes with a
# triangle are only mirrored horizontally.
MIRROR_WORDS = {"horizontal": {"left": "right", "right": "left"}, "vertical": {"above": "below", "below": "above"}}
# Share of each batch spent on relation scenes next to their mirror images.
MIRROR_SHARE = 0.125


def mirror_text(text: str, axis: str) -> str:
    swap = MIRROR_WORDS[axis]
    return " ".join(swap.get(word, word) for word in text.split(" "))


def mirror_axis(prompt: str) -> str | None:
    """Returns the axis a scene of `prompt` can be mirrored along so that
    its relation flips. Returns None when it has no relation, or only a
    vertical one between shapes that include a triangle."""
    words = set(prompt.split(" "))
    if words & {"left", "right"}:
        return "horizontal"
    if words & {"above", "below"} and "triangle" not in prompt:
        return "vertical"
    return None


def mirror_image(image: torch.Tensor, axis: str) -> torch.Tensor:
    return torch.flip(image, dims=[-1] if axis == "horizontal" else [-2])


def sample_batch(
    data, train_size: int, mirrorable: list[int], batch: int, generator: torch.Generator, drawn: list[int] | None = None, drawn_share: float = 0.0
) -> list[tuple[int, str | None]]:
    """Draws batch items as (image index, mirror axis or None).

    Most items are drawn at random from the first `train_size` images. A
    `drawn_share` of the batch comes from the indices `drawn` instead: images
    a generator drew, captioned by `redraft shapes label`. A share are relation scenes, each
    followed by its mirror image, which differs from it only in the
    relation. The contrastive loss can tell such a pair apart only by
    reading the relation in both towers. NOTE: on the shapes data this did
    not lift relations above chance in 2,000 steps (see the model card)."""
    pairs = int(batch * MIRROR_SHARE) if mirrorable else 0
    from_drawn = round(batch * drawn_share) if drawn else 0
    items: list[tuple[int, str | None]] = [
        (i, None) for i in torch.randint(train_size, (batch - 2 * pairs - from_drawn,), generator=generator).tolist()
    ]
    if from_drawn:
        items += [(drawn[pick], None) for pick in torch.randint(len(drawn), (from_drawn,), generator=generator).tolist()]
    for pick in torch.randint(len(mirrorable), (pairs,), generator=generator).tolist() if pairs else []:
        index = mirrorable[pick]
        items += [(index, None), (index, mirror_axis(data.prompts[index]))]
    return items


def batch_loss(model, tokenizer, data, items, generator, hard_weight):
    indices = [index for index, _ in items]
    axes = [axis for _, axis in items]

    def text(value: str, axis: str | None) -> str:
        return value if axis is None else mirror_text(value, axis)

    prompts = [text(data.prompts[i], axis) for i, axis in items]
    images = data.images[indices].float()
    for row, axis in enumerate(axes):
        if axis is not None:
            images[row] = mirror_image(images[row], axis)
    noisy = torch.rand(len(indices), generator=generator) < 0.5
    images[noisy] = corrupt(images[noisy], generator)
    pixels = clip_normalise(images.round().clamp(0, 255).to(torch.uint8))

    # Partial captions are true of the image too; one per image where any exist.
    partials = []
    for i, axis in items:
        options = data.partial[i]
        partial = options[torch.randint(len(options), (1,), generator=generator).item()] if options else data.prompts[i]
        partials.append(text(partial, axis))
    negatives = [
        text(negative, axis) for i, axis in items for negative in pick_negatives(data.negatives[i], data.negative_kinds[i], generator)
    ]

    image_embeddings = embed_images(model, pixels)
    text_embeddings = embed_texts(model, tokenizer, prompts + partials + negatives)
    batch = len(items)
    prompt_embeddings = text_embeddings[:batch]
    partial_embeddings = text_embeddings[batch : 2 * batch]
    negative_embeddings = text_embeddings[2 * batch :].view(batch, NEGATIVES_PER_IMAGE, -1)
    scale = model.logit_scale.exp().clamp(max=100.0)

    # In-batch contrastive loss; identical prompts in a batch are all positives.
    logits = scale * image_embeddings @ prompt_embeddings.T
    same = torch.tensor([[a == b for b in prompts] for a in prompts], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)
    contrastive = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    # Hard negatives: the prompt, and a partial caption, must beat captions
    # that differ in one count, colour, shape or relation.
    negative_logits = scale * torch.einsum("bd,bkd->bk", image_embeddings, negative_embeddings)
    zeros = torch.zeros(batch, dtype=torch.long)
    for positive in (prompt_embeddings, partial_embeddings):
        positive_logits = scale * (image_embeddings * positive).sum(dim=-1, keepdim=True)
        contrastive = contrastive + hard_weight * F.cross_entropy(torch.cat([positive_logits, negative_logits], dim=1), zeros) / 2
    return contrastive


@torch.no_grad()
def evaluate(model, tokenizer, data, indices) -> dict:
    """Share of (image, negative) pairs where the prompt scores higher, in
    all and per negative kind, and the cosine distributions used to
    calibrate the critic."""
    model.eval()
    positives, negatives, wins, pairs = [], [], 0, 0
    kind_wins: dict[str, int] = {}
    kind_pairs: dict[str, int] = {}
    for start in range(0, len(indices), 256):
        chunk = indices[start : start + 256]
        image_embeddings = embed_images(model, clip_normalise(data.images[chunk]))
        prompt_embeddings = embed_texts(model, tokenizer, [data.prompts[i] for i in chunk])
        positive = (image_embeddings * prompt_embeddings).sum(-1)
        positives.extend(positive.tolist())
        for row, i in enumerate(chunk):
            texts = data.negatives[i]
            negative = embed_texts(model, tokenizer, texts) @ image_embeddings[row]
            negatives.extend(negative.tolist())
            wins += int((negative < positive[row]).sum())
            pairs += len(texts)
            for kind, value in zip(data.negative_kinds[i], negative.tolist()):
                kind_wins[kind] = kind_wins.get(kind, 0) + int(value < positive[row])
                kind_pairs[kind] = kind_pairs.get(kind, 0) + 1
            # The critic's relation probe compares canonical captions that
            # differ only in the relation. The prompt's own style can hide
            # that difference, so it is measured on its own.
            for text, kind in zip(texts, data.negative_kinds[i]):
                if kind == "opposite_relation":
                    own = mirror_text(mirror_text(text, "horizontal"), "vertical")
                    pair = embed_texts(model, tokenizer, [own, text]) @ image_embeddings[row]
                    kind_wins["relation_probe"] = kind_wins.get("relation_probe", 0) + int(pair[0] > pair[1])
                    kind_pairs["relation_probe"] = kind_pairs.get("relation_probe", 0) + 1
    model.train()
    per_kind = {kind: kind_wins[kind] / kind_pairs[kind] for kind in sorted(kind_pairs)}
    return {
        "hard_negative_accuracy": wins / max(pairs, 1),
        "per_kind": per_kind,
        "positive_cosines": positives,
        "negative_cosines": negatives,
    }


def calibration(result: dict) -> dict:
    """Maps the median negative cosine to score 0 and the 75th percentile
    positive cosine to score 1 (chosen so most correct images pass 0.5)."""
    positives = sorted(result["positive_cosines"])
    negatives = sorted(result["negative_cosines"])
    low = negatives[len(negatives) // 2]
    high = positives[int(len(positives) * 0.75)]
    if high <= low:
        high = low + 1e-3
    return {"alignment": {"cosine_low": low, "cosine_high": high}, "pass_threshold": 0.5}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=pathlib.Path, required=True, help="dataset written by `redraft shapes dataset`")
    parser.add_argument("--run", type=pathlib.Path, required=True, help="run folder: checkpoint, log, exported model")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--hard-weight", type=float, default=1.0, help="weight of the hard-negative loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", type=pathlib.Path, help="start from this exported CLIP folder instead of random weights")
    parser.add_argument("--drawn", type=pathlib.Path, help="images a generator drew, captioned by `redraft shapes label`")
    parser.add_argument("--drawn-share", type=float, default=0.5, help="share of each batch taken from --drawn")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--save-every", type=int, default=250)
    args = parser.parse_args(argv)

    if not 0.0 <= args.drawn_share <= 1.0:
        parser.error(f"--drawn-share {args.drawn_share} is outside the range 0 to 1")
    set_threads(args.threads)
    seed_everything(args.seed)
    data = load_dataset(args.data)
    tokenizer = PromptTokenizer(args.data / "tokenizer.json", MAX_TOKENS)
    image_size = data.images.shape[-1]
    if args.init is not None:
        model = CLIPModel.from_pretrained(args.init).float()
        if model.config.text_config.vocab_size != tokenizer.vocab_size:
            parser.error(
                f"--init {args.init} has {model.config.text_config.vocab_size} tokens, "
                f"the tokenizer of --data {tokenizer.vocab_size}"
            )
    else:
        model = build_model(tokenizer, args.width, args.layers, args.heads, image_size, args.patch)
    print(f"CLIP with {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)

    held_out = list(range(data.size - held_out_count(data.size, 1024), data.size))
    train_size = data.size - len(held_out)
    mirrorable = [index for index in range(train_size) if mirror_axis(data.prompts[index]) is not None]
    # Drawn images follow the rendered ones; their last ones are held out too.
    drawn: list[int] = []
    drawn_held_out: list[int] = []
    if args.drawn is not None:
        extra = load_dataset(args.drawn)
        if extra.images.shape[1:] != data.images.shape[1:]:
            parser.error(f"--drawn images are {tuple(extra.images.shape[1:])}, --data images {tuple(data.images.shape[1:])}")
        first = data.size
        data = concat_datasets(data, extra)
        kept_out = held_out_count(extra.size, 256)
        drawn = list(range(first, data.size - kept_out))
        drawn_held_out = list(range(data.size - kept_out, data.size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.98))
    warmup = max(args.steps // 20, 1)
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
        items = sample_batch(data, train_size, mirrorable, args.batch, generator, drawn, args.drawn_share)
        loss = batch_loss(model, tokenizer, data, items, generator, args.hard_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        progress.step(step, loss.item(), args.batch, lr=schedule.get_last_lr()[0])
        if step % args.save_every == 0 or step == args.steps:
            checkpointer.save(step, {"model": model, "optimizer": optimizer, "schedule": schedule})
            result = evaluate(model, tokenizer, data, held_out)
            kinds = ", ".join(f"{kind} {value:.3f}" for kind, value in result["per_kind"].items())
            print(f"step {step}: held-out hard-negative accuracy {result['hard_negative_accuracy']:.3f} ({kinds})", flush=True)
            if drawn_held_out:
                drawn_result = evaluate(model, tokenizer, data, drawn_held_out)
                kinds = ", ".join(f"{kind} {value:.3f}" for kind, value in drawn_result["per_kind"].items())
                print(f"step {step}: drawn held-out hard-negative accuracy {drawn_result['hard_negative_accuracy']:.3f} ({kinds})", flush=True)

    progress.close()
    result = evaluate(model, tokenizer, data, held_out)
    export = args.run / "export"
    model.save_pretrained(export, safe_serialization=True)
    (export / "redraft_critic.json").write_text(json.dumps(calibration(result), indent=2) + "\n")
    summary = {"steps": step, "hard_negative_accuracy": result["hard_negative_accuracy"], "per_kind": result["per_kind"]}
    if drawn_held_out:
        drawn_result = evaluate(model, tokenizer, data, drawn_held_out)
        summary["drawn"] = {"hard_negative_accuracy": drawn_result["hard_negative_accuracy"], "per_kind": drawn_result["per_kind"]}
    (args.run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"exported {export}: {summary}", flush=True)


if __name__ == "__main__":
    main()
