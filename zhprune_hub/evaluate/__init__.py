"""Evaluation of base and pruned models: perplexity, lm-eval zero-shot, and deltas against a reference."""

from zhprune_hub.evaluate.compare import compare, render_table
from zhprune_hub.evaluate.runner import evaluate_model, evaluate_models

__all__ = ["compare", "evaluate_model", "evaluate_models", "render_table"]
