"""Training the enhancement network: config, data, the loop and guidance-method plug-ins.

Import :func:`rave.training.loop.train` for the loop itself; this package only re-exports
the config so that reading a config does not import the loop's dependencies.
"""

from rave.training.config import ConfigError, TrainConfig, load_config

__all__ = ["ConfigError", "TrainConfig", "load_config"]
