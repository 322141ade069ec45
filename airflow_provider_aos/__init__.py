"""Apache Airflow provider for the AvePoint Online Services (AOS) Graph API."""

from __future__ import annotations

__version__ = "0.1.0"
