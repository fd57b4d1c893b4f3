"""ILLUME's model and science: ShapesWorld, the judge, the model, training (no prefect, no ray)."""
