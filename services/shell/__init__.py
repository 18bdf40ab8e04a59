"""The services' shells' plumbing: MQTT and Redis I/O, commits, health, metrics, logs."""
