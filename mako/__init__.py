"""mako-zero: the shared library behind tick.py, scribe.py, supervisor.py, digest.py and analyse.py."""

__version__ = "0.1.0"
