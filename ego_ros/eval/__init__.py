"""Evaluation with the paper's protocol: metrics, runs and reports."""
