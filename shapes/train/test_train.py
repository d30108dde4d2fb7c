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

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import export  # noqa: E402
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
        export.main(["--data", str(cls.data), "--clip", str(cls.clip / "export"), "--vae", str(cls.vae / "export"), "--unet", str(cls.unet / "export"), "--out", str(cls.out)])

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
        result = subprocess.run(
            [str(REDRAFT), "shapes", "eval", "--per-category", "1", "--steps", "2"]
            + ["--generator-model", str(self.out / "generator"), "--critic-model", str(self.out / "critic")],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("overall", result.stdout)
        for category in ("single_object", "two_objects", "counting", "colors", "position", "color_attr"):
            self.assertIn(category, result.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
