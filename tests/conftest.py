"""Fixtures shared by test modules."""
import pytest

import fastlstm
from helpers import SILERO


@pytest.fixture(scope="module")
def silero():
    """A session of Silero VAD (one per test module)."""
    return fastlstm.InferenceSession(SILERO)
