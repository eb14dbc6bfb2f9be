"""gunicorn's own error answers as small JSON bodies instead of its HTML page.

gunicorn answers a request it cannot hand to the app itself: a request line over
``limit_request_line`` (414), a header over ``limit_request_field_size`` (431), a malformed
request (400). API clients are promised JSON errors, so ``gunicorn.conf.py`` installs
``write_json_error`` in place of ``gunicorn.util.write_error``, which every worker class
calls for these answers (``gunicorn.workers.base.Worker.handle_error``). Same status line,
same ``Connection: close``; only the body and its type differ.
"""

import json

from gunicorn import util

CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "header_too_large",
    500: "server_error",
    501: "not_implemented",
}
DETAIL_MAX = 200  # gunicorn's message may quote the (huge, hostile) request line


def write_json_error(sock, status_int, reason, mesg):
    detail = f"{reason}: {mesg}" if mesg else reason
    if len(detail) > DETAIL_MAX:
        detail = detail[: DETAIL_MAX - 1] + "…"
    body = json.dumps({"detail": detail, "code": CODES.get(status_int, "bad_request")}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    util.write_error = write_json_error
