"""`divalign compare SPEC`: train every variant × seed of a spec and compare them, calibrated, against a reference."""

from .spec import EvaluationSpec

__all__ = ["EvaluationSpec"]
