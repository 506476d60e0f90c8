"""Exporters to the next hop (OTLP/gRPC, OTLP/HTTP, an OTLP/JSON-lines file), each behind a bounded queue."""

from __future__ import annotations

from urllib.parse import urlsplit

from collector_processor.config import ProcessorConfig
from collector_processor.exporters.base import QueuedExporter
from collector_processor.exporters.file import FileExporter
from collector_processor.exporters.grpc import GrpcExporter
from collector_processor.exporters.http import HttpExporter
from collector_processor.telemetry import Telemetry


def exporter_for(url: str, config: ProcessorConfig, telemetry: Telemetry) -> QueuedExporter:
    """The exporter a ``grpc://``, ``http(s)://`` or ``file:///`` URL asks for."""
    scheme = urlsplit(url).scheme
    if scheme == "grpc":
        return GrpcExporter(url, config, telemetry)
    if scheme in ("http", "https"):
        return HttpExporter(url, config, telemetry)
    return FileExporter(url, config, telemetry)


__all__ = ["FileExporter", "GrpcExporter", "HttpExporter", "QueuedExporter", "exporter_for"]
