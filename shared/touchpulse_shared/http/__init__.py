"""HTTP pieces both web services use: RFC 9457 problems, request metrics, API-key access."""
