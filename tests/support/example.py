"""The project's example issue and what the sample it was made from contains."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "china-ai-weekly-2022-06-14.md"

SAMPLE_SECTIONS = ["News of the Week", "Papers and Project", "Rising Startups"]
SAMPLE_STORIES = [
    "Megvii Chief Scientist, ResNet Creator Dies at 45",
    "Baidu, Geely’s EV Startup Unveils First Self-Driving Robocar Concept ROBO-01",
    "Alibaba Cloud Unveils New Cloud Infrastructure Processing Unit (CIPU) to Take on CPUs",
    "Vision GNN: An Image is Worth Graph of Nodes",
    "Zero and R2D2: A Large-scale Chinese Cross-modal Benchmark and A Vision-Language Framework",
    "Siamese Image Modeling for Self-Supervised Vision Representation Learning",
]
# The example's own preheader: a line of its own, not the intro's first sentence again.
EXAMPLE_PREHEADER = ("Remembering Jian Sun, co-creator of ResNet; JIDU’s ROBO-01 robocar; Alibaba’s CIPU chip;"
                     " three papers and three startups")
