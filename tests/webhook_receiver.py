"""A real HTTP receiver on the loopback for the webhook tests: it records every request and
answers with the status codes it is told, in order (then 200)."""

import contextlib
import http.server
import threading
import time

# The ports this project's webhook tests may listen on (one receiver at a time per port).
PORTS = range(8530, 8540)


class Receiver:
    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []  # answered in order; 200 once used up
        self.body = b"ok"
        self.hanging = False  # True: take the request and never answer
        self.keep_alive = False
        self.lock = threading.Lock()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/inventory"

    def wait_for(self, count: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")

    def _handler(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out in two writes: with Nagle's algorithm the
            # second waits for the sender's delayed ACK (40 ms) on a kept-alive connection.
            disable_nagle_algorithm = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic()}
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    hanging = receiver.hanging
                if hanging:  # never answer: the worker is killed meanwhile
                    time.sleep(60)
                    return
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", str(len(receiver.body)))
                if not receiver.keep_alive:
                    # A connection kept open would outlive this receiver and answer the next
                    # test's deliveries on the same port.
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args):
                pass

        return Handler

    def start(self):
        last_error = None
        for port in PORTS:
            try:
                self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler())
                break
            except OSError as exc:
                last_error = exc
        else:
            raise RuntimeError(f"no free port in {PORTS}: {last_error}")
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def running_receiver():
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
