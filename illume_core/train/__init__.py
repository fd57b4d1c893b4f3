"""Training: the base corpus and batch streams, stage recipes, the shared training loop,
the stage runners and resumable jobs, the vision pretraining loops and preference (DPO) loss."""
