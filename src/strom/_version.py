"""strom's version, read from the installed package's metadata (``0+unknown`` in a source tree
that was never installed). Its own module so that ``import strom`` does not load
``importlib.metadata`` until ``strom.__version__`` is read."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("strom")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"
