"""The local environment: real Docker, registry, Kubernetes, PostgreSQL, Redis, S3 and
Prometheus/Alertmanager on loopback, started and stopped by this project alone."""
