"""Helpers the tests share: one population fit as the engine runs it, the checks that two fits are the same, and
the check that user errors are one line."""

import numpy as np
import pytest
import torch

from runner.errors import RunnerError


def assert_one_line_errors(cases, call) -> None:
    """Each (argument, expected) of `cases`: call(argument) raises a RunnerError of one line holding `expected`."""
    for argument, expected in cases:
        with pytest.raises(RunnerError) as info:
            call(argument)
        message = str(info.value)
        assert expected in message, (expected, message)
        assert "\n" not in message
