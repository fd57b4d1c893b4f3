"""The model: its config and presets, the vision encoder and tokenizers, the text tokenizer,
the processor, the unified LLM, sampling, checkpoints and the inference engine."""
