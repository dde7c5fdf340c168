"""The bottom layer: what is on the shared Redis and how both ends of a queue agree on it.

Celery's configuration, the queue and priority list layout, every Redis key name, the
sent-at header and the kill switch. `control/`, `execution/`, `worker/` and everything above
import it; it imports only the package's leaves (settings, queues, text) and upstreams.
"""
