"""A webhook receiver for facegate's events, verifying every delivery with the Standard Webhooks library
(`standardwebhooks` on PyPI), as a caller's service would.

Usage: python webhook_receiver.py PORT LOG_FILE        (the secret, whsec_..., in FACEGATE_WEBHOOK_SECRET)
       python webhook_receiver.py --check LOG_FILE TYPE...

The first form serves POST /hook on 127.0.0.1:PORT until killed: a delivery that verifies is answered 204 and
appended to LOG_FILE as one JSON line (webhook-id, event type, session id); one that does not is answered 400 and
logged as unverified. The second form checks LOG_FILE: no unverified delivery, each webhook-id once, and each TYPE
seen at least once; it exits 1 otherwise.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY = 1 << 20


def serve(port, log_path):
    webhook = Webhook(os.environ["FACEGATE_WEBHOOK_SECRET"])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            if self.path != "/hook" or length > MAX_BODY:
                self.send_response(404)
                self.end_headers()
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                event = webhook.verify(body, headers)
                entry = {"id": headers["webhook-id"], "type": event["type"], "session": event["data"]["id"]}
                status = 204
            except (WebhookVerificationError, KeyError, ValueError) as e:
                entry = {"unverified": str(e)}
                status = 400
            with lock, open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def check(log_path, types):
    with open(log_path, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    bad = [e for e in entries if "unverified" in e]
    ids = [e["id"] for e in entries if "id" in e]
    seen = {e["type"] for e in entries if "type" in e}
    problems = []
    if bad:
        problems.append(f"{len(bad)} deliveries did not verify: {bad[:3]}")
    if len(ids) != len(set(ids)):
        problems.append("a webhook-id arrived twice")
    missing = [t for t in types if t not in seen]
    if missing:
        problems.append(f"no {', '.join(missing)} event (seen: {sorted(seen)})")
    if problems:
        sys.exit("webhooks: " + "; ".join(problems))
    sessions = {e["session"] for e in entries if "session" in e}
    print(f"webhooks: {len(ids)} deliveries for {len(sessions)} sessions, each verified with standardwebhooks")


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3:])
    else:
        serve(int(sys.argv[1]), sys.argv[2])
