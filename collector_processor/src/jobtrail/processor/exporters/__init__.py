"""Exporters to the next hop (OTLP/gRPC, OTLP/HTTP, an OTLP/JSON-lines file), each behind a bounded queue."""

from __future__ import annotations

from urllib.parse import urlsplit

from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.exporters.base import QueuedExporter
from jobtrail.processor.exporters.file import FileExporter
from jobtrail.processor.exporters.grpc import GrpcExporter
from jobtrail.processor.exporters.http import HttpExporter
from jobtrail.processor.telemetry import Telemetry


def exporter_for(url: str, config: ProcessorConfig, telemetry: Telemetry) -> QueuedExporter:
    """The exporter a ``grpc://``, ``http(s)://`` or ``file:///`` URL asks for."""
    scheme = urlsplit(url).scheme
    if scheme == "grpc":
        return GrpcExporter(url, config, telemetry)
    if scheme in ("http", "https"):
        return HttpExporter(url, config, telemetry)
    return FileExporter(url, config, telemetry)


__all__ = ["FileExporter", "GrpcExporter", "HttpExporter", "QueuedExporter", "exporter_for"]
