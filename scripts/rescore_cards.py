"""Recompute the shipped models' test scores with today's inference code and rewrite their cards.

The weights stay as they are; run it from the repository root after a change to inference
(prediction, resampling, refinement) so the cards say what the shipped models score today:

    python scripts/rescore_cards.py assets/pretrained/coarse_1m assets/pretrained/rnn_1m
"""

from __future__ import annotations

import json
import sys

from refiner.recipes.pretrain import rescore_card

if __name__ == "__main__":
    for folder in sys.argv[1:] or ["assets/pretrained/coarse_1m", "assets/pretrained/rnn_1m"]:
        card = rescore_card(folder)
        print(folder, json.dumps({t: round(s["iou"], 4) for t, s in card["test_scores"].items()}), flush=True)
