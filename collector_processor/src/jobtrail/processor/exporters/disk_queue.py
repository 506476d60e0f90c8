"""An exporter's queue on disk (``queue_dir``): what the processor acknowledged survives a crash of the process.

Append-only segment files of records ``[length, spans, seq, crc32][payload]`` plus a ``committed`` file holding
the highest sequence number the next hop has accepted (everything up to it, in order). A record is written with
``os.write`` before the sender gets its answer, so it is in the kernel's page cache: it survives SIGKILL, the OOM
killer or a bug that kills the process, but not a power loss or a kernel crash (no fsync per request, like the
collector's ``file_storage`` with its default ``fsync: false``). On start, the records after ``committed`` are
read back in order; a torn last record (only possible after a power loss) ends the replay.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib

logger = logging.getLogger("jobtrail.processor.exporters.disk_queue")

_HEADER = struct.Struct("<IIQI")
"""payload length, span count, sequence number, crc32 of the payload."""
SEGMENT_BYTES = 16 * 1024 * 1024
"""A new segment file starts past this size; a segment is deleted once every record in it is committed."""
_SEGMENT_PREFIX = "segment-"
_SEGMENT_SUFFIX = ".log"
_COMMITTED = "committed"


class DiskQueue:
    """Records in sequence order; ``commit(seq)`` says every record up to ``seq`` was delivered."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._lock = threading.Lock()
        self._committed = self._read_committed()
        self._segments = sorted(
            (int(name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]), os.path.join(directory, name))
            for name in os.listdir(directory)
            if name.startswith(_SEGMENT_PREFIX) and name.endswith(_SEGMENT_SUFFIX)
        )
        self._next_seq = self._committed + 1
        self._fd: int | None = None
        self._size = 0

    def replay(self) -> list[tuple[int, bytes, int]]:
        """The records not yet committed, as ``(seq, payload, spans)`` in order (call once, before appending)."""
        records = []
        for _first, path in self._segments:
            with open(path, "rb") as handle:
                data = handle.read()
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, spans, seq, crc = _HEADER.unpack_from(data, offset)
                payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
                if len(payload) != length or zlib.crc32(payload) != crc:
                    logger.warning("%s: torn record at byte %d (not acknowledged); replay ends there", path, offset)
                    break
                offset += _HEADER.size + length
                self._next_seq = max(self._next_seq, seq + 1)
                if seq > self._committed:
                    records.append((seq, payload, spans))
        return records

    def append(self, payload: bytes, spans: int) -> int:
        """Write one record; return its sequence number. Raises OSError when the disk refuses it."""
        with self._lock:
            seq = self._next_seq
            if self._fd is None or self._size >= SEGMENT_BYTES:
                self._open_segment(seq)
            assert self._fd is not None
            record = memoryview(_HEADER.pack(len(payload), spans, seq, zlib.crc32(payload)) + payload)
            while record:
                written = os.write(self._fd, record)
                record = record[written:]
            self._size += _HEADER.size + len(payload)
            self._next_seq = seq + 1
            return seq

    def commit(self, seq: int) -> None:
        """Every record up to ``seq`` was delivered: remember it, and delete segments with nothing left to send."""
        with self._lock:
            if seq <= self._committed:
                return
            self._committed = seq
            temporary = os.path.join(self.directory, _COMMITTED + ".tmp")
            with open(temporary, "w", encoding="ascii") as handle:
                handle.write(str(seq))
            os.replace(temporary, os.path.join(self.directory, _COMMITTED))
            # A segment is done when the next one starts at or below committed + 1 (the current one never is).
            while len(self._segments) > 1 and self._segments[1][0] <= seq + 1:
                _first, path = self._segments.pop(0)
                os.remove(path)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open_segment(self, first_seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = os.path.join(self.directory, f"{_SEGMENT_PREFIX}{first_seq:020d}{_SEGMENT_SUFFIX}")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size
        if (first_seq, path) not in self._segments:  # an empty segment left by a crash is reused
            self._segments.append((first_seq, path))

    def _read_committed(self) -> int:
        try:
            with open(os.path.join(self.directory, _COMMITTED), encoding="ascii") as handle:
                return int(handle.read().strip() or 0)
        except FileNotFoundError:
            return 0
