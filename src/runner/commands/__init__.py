"""The command line: `runner` dispatch (cli), the Hydra app `runner train`, and resume, predict and report."""
