"""uld: LLM unlearning with Unlearning from Logit Difference (Ji et al., NeurIPS 2024)."""

__version__ = "0.1.0"
