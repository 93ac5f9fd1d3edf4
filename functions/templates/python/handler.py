#!/usr/bin/env python3
"""{{ name }}: a fork-mode Hark function.

The request body arrives on stdin and whatever is written to stdout is the response.
The request's method, path, query and headers are in Http_* environment variables
(Http_Method, Http_Path, Http_Query, Http_Content_Type). An uncaught exception exits
non-zero, which answers 500 with the end of stderr.
"""

import os
import sys


def handle(body: str, method: str) -> str:
    """Answers one call: `body` is the request body, `method` its HTTP method."""
    who = body.strip() or "world"
    return f"Hello from {{ name }}, {who}!\n"


if __name__ == "__main__":
    request = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    sys.stdout.write(handle(request, os.environ.get("Http_Method", "POST")))
