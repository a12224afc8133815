"""MetaStudio: few-shot image classification with meta-learning."""

__version__ = "0.1.0"
