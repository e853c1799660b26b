"""A real S3-protocol server on 127.0.0.1 for the object-storage tests and the cloud-read benchmark.

moto's standalone server keeps the buckets; a small HTTP proxy in front of it counts the bytes it
sends back and, per object key, can answer a scripted fault instead (``500``: an internal error;
``truncate``: announces the full length, sends half the body, closes). Code under test talks to
the proxy as its S3 endpoint, the way it would to MinIO or a cloud provider.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

#: request headers not passed on to moto (the proxy speaks one request per connection to it)
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ObjectStore:
    """moto on one loopback port, the counting, fault-injecting proxy on another."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.moto_port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        #: object path (``/bucket/key``) -> faults still to answer, in order, to its GETs
        self.faults: dict[str, list[str]] = {}
        #: object path -> the bytes ``[first, stop)`` where a GET's range must start to get a fault
        self.fault_range: dict[str, tuple[int, int]] = {}
        #: the headers of every GET and HEAD, in order (lower-case names)
        self.seen: list[dict[str, str]] = []
        #: object path -> GET requests seen
        self.gets: dict[str, int] = {}
        #: response body bytes the proxy sent back, all requests together
        self.bytes_sent = 0
        self.requests = 0
        #: a slower network for benchmarks: seconds before each answer, and Mbit/s per connection
        self.latency_s = 0.0
        self.mbps = 0.0
        self._lock = threading.Lock()
        self.proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self.proxy.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        """What clients use as the S3 endpoint: the proxy."""
        host, port = self.proxy.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ObjectStore:
        self.moto.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.proxy.shutdown()
        self.proxy.server_close()
        self.moto.stop()

    def client(self):  # type: ignore[no-untyped-def]
        """A boto3 client straight to moto (set-up only: its traffic is not counted)."""
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.moto_port}",
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def put(self, bucket: str, key: str, path: Path | bytes, public: bool = False) -> str:
        """Upload a file (or bytes), creating the bucket if needed; return its ``s3://`` URI.
        A private object (the default) answers unsigned requests with 403, a public one with it."""
        client = self.client()
        if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=bucket)
        body = path if isinstance(path, bytes) else Path(path).read_bytes()
        client.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read" if public else "private")
        return f"s3://{bucket}/{key}"

    def fail(self, uri: str, *faults: str, start: int = 0, stop: int | None = None) -> None:
        """Answer the next GETs of the object at ``uri`` (``s3://bucket/key``) with ``faults``;
        only GETs whose range starts in ``[start, stop)`` (GDAL reads a file's header and IFDs
        first, then its tiles: a range of tiles fails mid-read)."""
        self.faults[_object_path(uri)] = list(faults)
        self.fault_range[_object_path(uri)] = (start, stop if stop is not None else 1 << 62)

    def reset_counts(self) -> None:
        with self._lock:
            self.bytes_sent = self.requests = 0
            self.seen.clear()
            self.gets.clear()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        store = self

        class Proxy(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                path = self.path.split("?", 1)[0]
                fault = ""
                with store._lock:
                    store.requests += 1
                    if self.command in ("GET", "HEAD"):
                        store.seen.append({k.lower(): v for k, v in self.headers.items()})
                    if self.command == "GET":
                        store.gets[path] = store.gets.get(path, 0) + 1
                        first, stop = store.fault_range.get(path, (0, 0))
                        if store.faults.get(path) and first <= _first_byte(self.headers) < stop:
                            fault = store.faults[path].pop(0)
                if store.latency_s:
                    time.sleep(store.latency_s)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if fault == "500":
                    self._send(500, {"Content-Type": "application/xml"}, _ERROR)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", store.moto_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Host"] = self.headers.get("Host", "")  # part of the request's signature
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP | {"content-length"}}
                if self.command == "HEAD":
                    out["Content-Length"] = resp.getheader("Content-Length", "0")
                    self._send(resp.status, out, b"", head=True)
                elif fault == "truncate":
                    out["Content-Length"] = str(len(data))
                    self._send(resp.status, out, data[: len(data) // 2], close=True)
                else:
                    self._send(resp.status, out, data)

            def _send(
                self,
                status: int,
                headers: dict[str, str],
                body: bytes,
                head: bool = False,
                close: bool = False,
            ) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if not head and "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                if close:
                    self.send_header("Connection", "close")
                self.end_headers()
                step = 1 << 16
                for start in range(0, len(body), step):
                    self.wfile.write(body[start : start + step])
                    if store.mbps:
                        time.sleep(len(body[start : start + step]) * 8 / (store.mbps * 1e6))
                with store._lock:
                    store.bytes_sent += len(body)
                if close:
                    self.wfile.flush()
                    self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        return Proxy


_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


def _first_byte(headers: http.client.HTTPMessage) -> int:
    """The first byte a GET asks for (``Range: bytes=N-M``); 0 without a range."""
    ranged = headers.get("Range", "")
    return int(ranged.split("=", 1)[1].split("-", 1)[0]) if ranged.startswith("bytes=") else 0


def _object_path(uri: str) -> str:
    """``s3://bucket/key`` -> ``/bucket/key`` (path-style addressing)."""
    return "/" + uri.split("://", 1)[1]
