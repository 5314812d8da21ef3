"""Configuration: units, the models of each section, loading from YAML and the environment."""
