"""The run folder and what writes it: claiming and locking it, status.json, per-member artifacts, events, timing.

`from runner import rundir` gives the folder's life cycle (runner.rundir.folder) and where a fit keeps its state
(runner.rundir.layout) by their short names."""

from runner.rundir.folder import (
                                  RESULTS,
                                  STATUS,
                                  WRITES,
                                  abandon,
                                  check_job_folders,
                                  claim,
                                  claim_job,
                                  fail,
                                  holds,
                                  is_finished,
                                  read_status,
                                  reason,
                                  refuse_links,
                                  release,
                                  replaced,
                                  replacing,
                                  rollback,
                                  started,
                                  update_status,
                                  write_atomic,
                                  write_status,
)
from runner.rundir.layout import fit_state, fit_states

__all__ = ["RESULTS", "STATUS", "WRITES", "abandon", "check_job_folders", "claim", "claim_job", "fail", "fit_state",
           "fit_states", "holds", "is_finished", "read_status", "reason", "refuse_links", "release", "replaced",
           "replacing", "rollback", "started", "update_status", "write_atomic", "write_status"]
