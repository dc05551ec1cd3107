"""Container health check: esl-app's /ready endpoint (Settings.http_port) answers 200."""

import os
import sys
import urllib.request

port = os.environ.get("ESL_APP_HTTP_PORT", "9184")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
