"""The benchmark harness moved to the cnncc.bench package; this name stays importable."""
from .bench import *  # noqa: F401,F403
from .bench import __all__  # noqa: F401
