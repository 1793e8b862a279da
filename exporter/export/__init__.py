"""Export: snapshot → Prometheus metric families, and the HTTP server that serves them."""
