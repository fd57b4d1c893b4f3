"""The ShapesWorld judge: finds objects (shape, colour, box) in an image and scores GenEval lines.

A classical, model-free pipeline (numpy + PIL only), so it owes nothing to the model it scores.
One concept per module:

- `pixels`: any image to float RGB, the palette, nearest reference colours, noise estimate;
- `components`: 8-connected regions of a mask;
- `shapes`: the contract's five shapes as ideal figures, and their pixel coverage;
- `coverage_fit`: least-squares fit of every ideal shape to a region's coverage field;
- `classify`: which shape the fits name, or "unknown" (the gates, set from data);
- `detect`: regions -> colour, coverage field, shape, box;
- `degrade`: the degradation the judge is specified against (`render_degraded`);
- `geneval_io`: scoring a metadata line, judging GenEval image folders, results files.
"""

from illume_core.judge.components import label_components
from illume_core.judge.degrade import render_degraded
from illume_core.judge.detect import Detection, DetectionResult, detect, speck_area
from illume_core.judge.geneval_io import (
    JudgeReport,
    Judgment,
    ResultLine,
    Scores,
    Skipped,
    _load_png,
    judge_folder,
    judge_image,
    read_results,
    summarize,
    write_results,
)
from illume_core.judge.pixels import COLOR_NAMES, UNKNOWN, to_rgb_array
from illume_core.judge.shapes import SHAPE_NAMES
from illume_core.world.rules import DIMENSIONS

__all__ = [
    "COLOR_NAMES",
    "DIMENSIONS",
    "SHAPE_NAMES",
    "UNKNOWN",
    "Detection",
    "DetectionResult",
    "JudgeReport",
    "Judgment",
    "ResultLine",
    "Scores",
    "Skipped",
    "_load_png",
    "detect",
    "judge_folder",
    "judge_image",
    "label_components",
    "read_results",
    "render_degraded",
    "speck_area",
    "summarize",
    "to_rgb_array",
    "write_results",
]
