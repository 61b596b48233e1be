"""Integrations with third-party libraries, each an optional extra imported only on demand.

- ``taskvisor.contrib.prometheus`` (``pip install 'taskvisor[prometheus]'``):
  ``PrometheusSubscriber``.
- ``taskvisor.contrib.otel`` (``pip install 'taskvisor[otel]'``): ``OpenTelemetrySubscriber``.

``import taskvisor`` never imports these modules nor the libraries they need.
"""

from __future__ import annotations

__all__: list[str] = []
