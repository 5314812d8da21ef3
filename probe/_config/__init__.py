"""Configuration: the YAML file and environment variables, checked into frozen models."""

from probe._config.config import Config
from probe._config.errors import ConfigError
from probe._config.loading import load_config
from probe._config.models import JobConfig, TargetConfig
from probe._config.redaction import dump_effective

__all__ = ["Config", "ConfigError", "JobConfig", "TargetConfig", "dump_effective", "load_config"]
