"""Evaluations: ShapesEval, VQA, editing and self-assessment agreement, computed from the
judge's verdicts and the model's answers."""
