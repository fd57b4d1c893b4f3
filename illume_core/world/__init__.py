"""ShapesWorld: scenes and their ground truth, prompts in GenEval's grammar, GenEval's
file formats and scoring rules, and the corpus the model learns from."""
