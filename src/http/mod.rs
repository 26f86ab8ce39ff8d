//! HTTP: the job status API, health and readiness, and Prometheus metrics.
