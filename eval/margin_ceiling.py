#!/usr/bin/env python3
"""How far the critic's calibration alone can take its agreement with the
oracle on generated images.

Reads the images and oracle verdicts that `redraft shapes eval --images DIR`
wrote and judges each image with `redraft critique --json`. Then it replays
the acceptance rule of a job (score at least the threshold, no failed check
other than alignment) for every combination of probe margins and score
thresholds on a grid. A probe passes when its own variant's probability
leads every other variant's by at least its margin, as in the critic.

The best combination is fitted on the very images it is scored on, so it is
an upper bound on what any calibration of this critic reaches there, not an
estimate of held-out agreement.

    python3 eval/margin_ceiling.py --images DIR [--critic-model FOLDER]
"""

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

PROBE_KINDS = ("presence", "count", "color", "relation")
MARGINS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def critique(redraft, critic_model, prompt, image):
    command = [redraft, "critique", "--json", "--prompt", prompt, str(image)]
    if critic_model:
        command += ["--critic-model", critic_model]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"redraft critique failed on {image}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def probe_leads(checks):
    """Returns (kind, lead) for each probe check: the own variant's
    probability (value "") minus the best other variant's."""
    leads = []
    for check in checks:
        if check["kind"] not in PROBE_KINDS:
            continue
        own = [v["probability"] for v in check["variants"] if v["value"] == ""]
        others = [v["probability"] for v in check["variants"] if v["value"] != ""]
        lead = own[0] - max(others) if own and others else float("nan")
        leads.append((check["kind"], lead))
    return leads


def agreement(rows, margins, threshold):
    right = wrong_accepts = wrong_rejects = 0
    for row in rows:
        accepts = (
            row["hard_checks_passed"]
            and row["score"] >= threshold
            and all(lead >= margins[kind] for kind, lead in row["leads"])
        )
        right += accepts == row["oracle_correct"]
        wrong_accepts += accepts and not row["oracle_correct"]
        wrong_rejects += not accepts and row["oracle_correct"]
    return right / len(rows), wrong_accepts, wrong_rejects


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, type=Path,
                        help="folder written by `redraft shapes eval --images`")
    parser.add_argument("--critic-model", help="critic model folder (default: the one `redraft critique` loads)")
    parser.add_argument("--redraft", default="target/release/redraft",
                        help="redraft binary (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.8,
                        help="the job threshold of the current verdict (default: %(default)s)")
    args = parser.parse_args()

    verdicts = args.images / "verdicts.jsonl"
    if not verdicts.is_file():
        sys.exit(f"--images {args.images}: no verdicts.jsonl there; "
                 "write one with `redraft shapes eval --images DIR`")
    rows = []
    for line in verdicts.read_text().splitlines():
        verdict = json.loads(line)
        result = critique(args.redraft, args.critic_model, verdict["prompt"],
                          args.images / verdict["image"])
        rows.append({
            "oracle_correct": verdict["oracle_correct"],
            "hard_checks_passed": result["hard_checks_passed"],
            "score": result["score"],
            "leads": probe_leads(result["checks"]),
            "passed": all(c["passed"] or c["kind"] == "alignment" for c in result["checks"]),
        })
        print(f"\rjudged {len(rows)} images", end="", file=sys.stderr)
    print(file=sys.stderr)
    if not rows:
        sys.exit(f"{verdicts} lists no images")

    current = sum(
        (r["hard_checks_passed"] and r["passed"] and r["score"] >= args.threshold)
        == r["oracle_correct"]
        for r in rows
    ) / len(rows)
    print(f"{len(rows)} images; the critic as calibrated, threshold {args.threshold}: "
          f"agreement {current:.3f}")

    best = []
    for values in itertools.product(MARGINS, repeat=len(PROBE_KINDS)):
        margins = dict(zip(PROBE_KINDS, values))
        for threshold in THRESHOLDS:
            best.append((agreement(rows, margins, threshold), values, threshold))
    best.sort(key=lambda item: -item[0][0])
    print(f"best of {len(best)} margin and threshold combinations, fitted on these images:")
    for (rate, wrong_accepts, wrong_rejects), values, threshold in best[:5]:
        margins = ", ".join(f"{k} {v}" for k, v in zip(PROBE_KINDS, values))
        print(f"  agreement {rate:.3f} ({wrong_accepts} wrong acceptances, "
              f"{wrong_rejects} wrong rejections): {margins}, threshold {threshold}")


if __name__ == "__main__":
    main()
