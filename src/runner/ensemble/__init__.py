"""Combining a population's members: ensembles over seeds, bags and dropout passes, formed per split."""
