"""The scorer: online features -> model vector -> LightGBM score, with hot reload."""

from serving.scorer.fast import FastPredictor
from serving.scorer.models import LoadedModel, ModelSet
from serving.scorer.scorer import BadRequest, Router, Scorer

__all__ = ["BadRequest", "FastPredictor", "LoadedModel", "ModelSet", "Router", "Scorer"]
