"""monitor: a brand-mention monitor for brand and customer-care teams."""

__version__ = "0.1.0"
USER_AGENT = f"monitor/{__version__} (+https://github.com/monitor-project/monitor)"
