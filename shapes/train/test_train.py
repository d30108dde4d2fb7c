"""Short training run of all three trainers, as CI runs it.

It renders a small dataset with the Rust renderer and trains tiny models
for a few dozen steps. The checks: each loss falls, an interrupted run
resumes from its checkpoint, and the exported folders load in redraft's
generator and critic. `redraft shapes eval` loads both with candle, then
draws and judges one image per category.

    python shapes/train/test_train.py

The `redraft` binary is taken from $REDRAFT, else target/release/redraft.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import export  # noqa: E402
import sample  # noqa: E402
import train_clip  # noqa: E402
import train_unet  # noqa: E402
import train_vae  # noqa: E402

REDRAFT = pathlib.Path(os.environ.get("REDRAFT", ROOT / "target" / "release" / "redraft"))
IMAGES = 240
STEPS = 40


def losses(run: pathlib.Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


class ShortTrainingRun(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not REDRAFT.exists():
            raise FileNotFoundError(f"{REDRAFT} does not exist; build it with `cargo build --release --bin redraft` or set REDRAFT")
        cls.temp = tempfile.TemporaryDirectory()
        cls.root = pathlib.Path(cls.temp.name)
        cls.data = cls.root / "data"
        subprocess.run([str(REDRAFT), "shapes", "dataset", str(cls.data), "--count", str(IMAGES), "--seed", "0", "--flawed-share", "0.3", "--styled-share", "0.3"], check=True)
        common = ["--data", str(cls.data), "--seed", "0", "--threads", "1", "--log-every", "5"]

        cls.clip = cls.root / "clip"
        train_clip.main(common + ["--run", str(cls.clip), "--steps", str(STEPS), "--batch", "32", "--width", "32", "--layers", "1", "--heads", "2", "--patch", "16", "--save-every", "20"])

        # The VAE stops halfway and is started again with the full step count.
        cls.vae = cls.root / "vae"
        vae_flags = common + ["--run", str(cls.vae), "--batch", "16", "--channels", "32,32,32,32", "--save-every", "20"]
        train_vae.main(vae_flags + ["--steps", str(STEPS // 2)])
        cls.vae_halfway = json.loads((cls.vae / "summary.json").read_text())["steps"]
        train_vae.main(vae_flags + ["--steps", str(STEPS)])

        cls.unet = cls.root / "unet"
        train_unet.main(
            common
            + ["--clip", str(cls.clip / "export"), "--vae", str(cls.vae / "export"), "--run", str(cls.unet)]
            + ["--steps", str(STEPS), "--batch", "16", "--channels", "32,32", "--heads", "2", "--save-every", "20"]
        )

        cls.out = cls.root / "out"
        export_flags = ["--data", str(cls.data), "--clip", str(cls.clip / "export"), "--vae", str(cls.vae / "export"), "--unet", str(cls.unet / "export")]
        export.main(export_flags + ["--out", str(cls.out)])

        # The sampler draws with the tiny generator. Its images are rarely
        # readable, so the fine-tuning reads rendered images instead, listed
        # as if drawn and captioned by the same `redraft shapes label`.
        cls.drawn = cls.root / "drawn"
        sample.main(["--generator", str(cls.out / "generator"), "--data", str(cls.data), "--out", str(cls.drawn), "--count", "12", "--batch", "5", "--threads", "1"])
        cls.listed = cls.root / "listed"
        cls.listed.mkdir()
        records = [json.loads(line) for line in (cls.data / "captions.jsonl").read_text().splitlines()]
        # Flawed objects match no shape, and the grammar cannot caption them.
        records = [record for record in records if not record.get("flaws")][:60]
        samples = [{"image": str(cls.data / record["image"]), "prompt": record["prompt"]} for record in records]
        (cls.listed / "samples.jsonl").write_text("".join(json.dumps(record) + "\n" for record in samples))
        cls.label = subprocess.run([str(REDRAFT), "shapes", "label", str(cls.listed)], capture_output=True, text=True, check=True)
        cls.tuned = cls.root / "critic-tuned"
        train_clip.main(
            common
            + ["--run", str(cls.tuned), "--steps", "10", "--batch", "32", "--init", str(cls.clip / "export"), "--drawn", str(cls.listed), "--lr", "1e-4"]
        )
        cls.tuned_out = cls.root / "out-tuned"
        export.main(export_flags + ["--critic-clip", str(cls.tuned / "export"), "--out", str(cls.tuned_out)])

    @classmethod
    def tearDownClass(cls):
        cls.temp.cleanup()

    def assert_loss_falls(self, run: pathlib.Path):
        values = losses(run)
        self.assertGreaterEqual(len(values), 4, f"too few log records in {run}")
        self.assertLess(values[-1], values[0], f"loss did not fall in {run}: {values}")

    def test_clip_loss_falls(self):
        self.assert_loss_falls(self.clip)

    def test_vae_loss_falls(self):
        self.assert_loss_falls(self.vae)

    def test_unet_loss_falls(self):
        self.assert_loss_falls(self.unet)

    def test_clip_reports_each_negative_kind(self):
        summary = json.loads((self.clip / "summary.json").read_text())
        self.assertEqual(summary["steps"], STEPS)
        self.assertEqual(
            set(summary["per_kind"]),
            {"wrong_count", "swapped_colors", "other_color", "opposite_relation", "other_shape", "relation_probe", "counted_flaw", "blob"},
        )

    def test_unet_skips_flawed_and_styled_images(self):
        records = [json.loads(line) for line in (self.data / "captions.jsonl").read_text().splitlines()]
        self.assertTrue(any(record.get("styles") for record in records))
        clean = sum(1 for record in records if not record.get("flaws") and not record.get("styles"))
        self.assertLess(clean, IMAGES)
        self.assertEqual(json.loads((self.unet / "summary.json").read_text())["images"], clean)

    def test_interrupted_run_resumes_from_its_checkpoint(self):
        self.assertEqual(self.vae_halfway, STEPS // 2)
        steps = [json.loads(line)["step"] for line in (self.vae / "log.jsonl").read_text().splitlines()]
        # One log record every 5 steps, none repeated: the second start went on from step 20.
        self.assertEqual(steps, list(range(5, STEPS + 1, 5)))
        self.assertEqual(json.loads((self.vae / "summary.json").read_text())["steps"], STEPS)

    def test_exported_folders_load_in_generator_and_critic(self):
        for out in (self.out, self.tuned_out):
            result = subprocess.run(
                [str(REDRAFT), "shapes", "eval", "--per-category", "1", "--steps", "2"]
                + ["--generator-model", str(out / "generator"), "--critic-model", str(out / "critic")],
                capture_output=True,
                text=True,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("overall", result.stdout)
            for category in ("single_object", "two_objects", "counting", "colors", "position", "color_attr"):
                self.assertIn(category, result.stdout)

    def test_sampler_draws_each_prompt(self):
        samples = [json.loads(line) for line in (self.drawn / "samples.jsonl").read_text().splitlines()]
        self.assertEqual(len(samples), 12)
        prompts = {json.loads(line)["prompt"] for line in (self.data / "captions.jsonl").read_text().splitlines()}
        for record in samples:
            self.assertIn(record["prompt"], prompts)
            with Image.open(self.drawn / record["image"]) as image:
                self.assertEqual(image.size, (64, 64))

    def test_label_captions_what_the_oracle_reads(self):
        # Rendered images show their prompt, so each is captioned.
        self.assertIn("captioned 60 of 60 images", self.label.stdout)
        self.assertIn("60 (1.000) show their prompt", self.label.stdout)

    def test_critic_fine_tunes_on_drawn_images(self):
        summary = json.loads((self.tuned / "summary.json").read_text())
        self.assertEqual(summary["steps"], 10)
        self.assertIn("drawn", summary)
        self.assertGreater(summary["drawn"]["hard_negative_accuracy"], 0.0)
        # The generator keeps the text encoder it was trained with.
        base = (self.out / "generator" / "text_encoder" / "model.safetensors").read_bytes()
        self.assertEqual(base, (self.tuned_out / "generator" / "text_encoder" / "model.safetensors").read_bytes())
        self.assertNotEqual((self.out / "critic" / "model.safetensors").read_bytes(), (self.tuned_out / "critic" / "model.safetensors").read_bytes())


if __name__ == "__main__":
    unittest.main(verbosity=2)
