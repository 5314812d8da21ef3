"""Infrastructure with no domain knowledge: logging, systemd notify, secret and TLS files."""
