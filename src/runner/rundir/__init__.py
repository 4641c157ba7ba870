"""The run folder and what writes it: claiming and locking it, status.json, per-member artifacts, events, timing.

`from runner import rundir` gives the folder's life cycle (runner.rundir.folder) by its short names."""

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

__all__ = ["RESULTS", "STATUS", "WRITES", "abandon", "check_job_folders", "claim", "claim_job", "fail", "holds",
           "is_finished", "read_status", "reason", "refuse_links", "release", "replaced", "replacing", "rollback",
           "started", "update_status", "write_atomic", "write_status"]
