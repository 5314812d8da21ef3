"""The Flink REST client: requests, credentials on the wire, and pure parsers of the answers."""
