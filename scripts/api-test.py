#!/usr/bin/env python3
"""schemathesis against a real node's /v1/openapi.json: no 5xx, no response
that breaks the document, no request that breaks it accepted, every
content type and header as documented. Twice: an open node, and a node with
tokens (every request with a token for all rights).

Checks: schemathesis's `all`, except `positive_data_acceptance`: the API has
rules the document cannot state (a `from` past the store's end, a stale
If-Match, the Expected-Revision header disagreeing with the body), so a
request valid by the document can rightly get 400, 409 or 412.

Installs schemathesis (PyPI) into target/test-servers/api-venv and re-runs
itself there. Needs target/debug/cairn.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "test-servers", "api-venv")
PACKAGES = ["schemathesis==4.32.5"]
EXAMPLES = os.environ.get("CAIRN_API_TEST_EXAMPLES", "25")


def log(msg):
    print(f"api-test: {msg}", file=sys.stderr, flush=True)


if sys.prefix != VENV:
    if not os.path.exists(os.path.join(VENV, ".ready")):
        log("installing " + ", ".join(PACKAGES) + " (PyPI)")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", *PACKAGES], check=True)
        open(os.path.join(VENV, ".ready"), "w").close()
    py = os.path.join(VENV, "bin", "python")
    os.execv(py, [py, *sys.argv])


def serve(extra):
    p = subprocess.Popen([os.path.join(ROOT, "target", "debug", "cairn"), "serve", "--storage", "memory://", "--listen", "127.0.0.1:0", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "CAIRN_LOG": "error"})
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        sys.exit(f"api-test: cairn serve did not start: {line!r}")
    return p, "http://" + line.split()[-1]


def schemathesis(base, headers):
    cmd = [os.path.join(VENV, "bin", "schemathesis"), "run", f"{base}/v1/openapi.json", "--url", f"{base}/v1",
           "--checks", "all", "--exclude-checks", "positive_data_acceptance",
           "--max-examples", EXAMPLES, "--seed", "20261201", "--request-timeout", "40", "--max-response-time", "40",
           "--no-color"]
    for h in headers:
        cmd += ["--header", h]
    r = subprocess.run(cmd, capture_output=True, text=True)
    tail = "\n".join(r.stdout.splitlines()[-25:])
    return r.returncode, r.stdout, tail


failed = False
with tempfile.TemporaryDirectory() as d:
    tokens = os.path.join(d, "tokens.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": [{"name": "all", "sha256": hashlib.sha256(b"api-test-token").hexdigest(), "stores": ["*"], "rights": ["read", "write", "admin"]}]}, f)
    for what, extra, headers in [("open node", [], []), ("node with tokens", ["--tokens", tokens], ["Authorization: Bearer api-test-token"])]:
        node, base = serve(extra)
        try:
            code, out, tail = schemathesis(base, headers)
        finally:
            node.kill()
        summary = [l for l in out.splitlines() if "generated" in l]
        if code != 0:
            failed = True
            log(f"FAIL {what}:\n{out}")
        else:
            log(f"ok: {what}: {summary[-1].strip() if summary else tail}")
sys.exit(1 if failed else 0)
