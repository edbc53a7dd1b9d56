"""Play-event analytics, reports and Prometheus metrics (docs/ANALYTICS.md).

The edge never calls into this package: routes describe each request in a
``MediaInfo`` (edge/request_info.py) and :class:`AnalyticsMiddleware` reads
it after the response has been sent.

    from analytics import wrap
    app = wrap(create_app(settings), settings.analytics, settings.metrics)
"""

from config.analytics import AnalyticsConfig, MetricsConfig, parse_analytics, parse_metrics
from .middleware import AnalyticsMiddleware, wrap
from .metrics import Metrics
from .service import Analytics, build_sink

__all__ = [
    "Analytics", "AnalyticsConfig", "AnalyticsMiddleware", "Metrics", "MetricsConfig", "build_sink",
    "parse_analytics", "parse_metrics", "wrap",
]
