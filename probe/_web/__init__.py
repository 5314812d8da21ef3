"""The daemon's HTTP side: the server, the Prometheus exposition and the OpenAPI document."""
