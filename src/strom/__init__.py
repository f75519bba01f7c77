"""strom: large datasets and real-time streams for ML, in one package.

The public API is what this module exports; everything else is internal and may change.
"""

from importlib.metadata import PackageNotFoundError, version

from strom.broker import Broker, BrokerConfig

try:
    __version__ = version("strom")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["Broker", "BrokerConfig", "__version__"]
