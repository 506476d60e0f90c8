"""A local file of OTLP/JSON lines (one ``ExportTraceServiceRequest`` per line), rotated by size.

For the embedded demo and the trail view: no collector needed to look at a stitched trace.
"""

from __future__ import annotations

import os
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from jobtrail.otlp.json_codec import encode_request
from jobtrail.processor.config import ProcessorConfig
from jobtrail.processor.exporters.base import QueuedExporter, RetryableExportError
from jobtrail.processor.telemetry import Telemetry
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class FileExporter(QueuedExporter):
    """``file:///abs/path.jsonl``; at ``file_max_bytes`` the file becomes ``.1`` (``.1`` -> ``.2``, ...)."""

    def __init__(self, url: str, config: ProcessorConfig, telemetry: Telemetry) -> None:
        super().__init__(url, config, telemetry)
        self.path = unquote(urlsplit(url).path)
        self._handle: BinaryIO | None = None

    def send(self, payload: bytes, timeout: float) -> int:
        line = encode_request(ExportTraceServiceRequest.FromString(payload)) + b"\n"
        try:
            handle = self._open()
            if handle.tell() and handle.tell() + len(line) > self.config.file_max_bytes:
                handle = self._rotate()
            handle.write(line)
            handle.flush()
        except OSError as error:
            self.close()
            raise RetryableExportError(f"cannot write {self.path}: {error}") from None
        return 0

    def _open(self) -> BinaryIO:
        if self._handle is None:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._handle = open(self.path, "ab")  # noqa: SIM115 (kept open across writes, closed in close())
        return self._handle

    def _rotate(self) -> BinaryIO:
        self.close()
        backups = self.config.file_backups
        if backups:
            for index in range(backups - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        return self._open()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
