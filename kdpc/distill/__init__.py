"""Distillation: loss functions, self-distillation targets, and training-curve plots."""
