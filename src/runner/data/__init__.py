"""Data: load a table, plan each member's rows, and preprocess per member on its training rows."""

from runner.data.datasets import Dataset, load_dataset
from runner.data.preprocess import Features, feature_names, make_transformer, member_features
from runner.data.splits import Member, describe_plan, population_plan

__all__ = ["Dataset", "load_dataset", "Member", "population_plan", "describe_plan",
           "Features", "member_features", "make_transformer", "feature_names"]
