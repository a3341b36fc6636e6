"""Tensor-trace-norm deep multi-task learning benchmark."""
