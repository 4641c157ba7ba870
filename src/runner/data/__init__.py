"""Data: load a dataset, plan each member's rows, and fit each member's preprocessing on its training rows."""

from runner.data.dataset import Dataset
from runner.data.loading import load_dataset
from runner.data.preprocess import Preprocessed, feature_names, make_transformer, preprocess
from runner.data.splits import Member, describe_plan, population_plan

__all__ = ["Dataset", "load_dataset", "Member", "population_plan", "describe_plan",
           "Preprocessed", "preprocess", "make_transformer", "feature_names"]
