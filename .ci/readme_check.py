#!/usr/bin/env python3
"""Runs the README's grpcurl and buf commands, as pasted, against `facegate serve --sandbox` on its default ports.

Usage: .ci/readme_check.py PATH_TO_FACEGATE [README.md]

A fenced code block preceded by `<!-- ci: run ... -->` (blank lines between are allowed) is run with
`bash -euo pipefail` in a scratch directory, each block in its own shell (a reader may paste any block alone), in
the order of the README. It fails on a non-zero exit, on an `expect="TEXT"` of the marker missing from the block's
output (stdout and stderr), on error details that grpcurl or buf could not decode, or when it takes over
BLOCK_TIMEOUT seconds (a StreamStatus that never ends). Every fenced block that calls grpcurl or `buf curl` must be
marked, `<!-- ci: run ... -->` or `<!-- ci: skip: why -->`, so a new command cannot escape the check; a block to
run has no shell comments (zsh's interactive prompt does not take them). The ready-to-paste grpcurl calls
`serve --sandbox` prints at start are run too.

The server is the README's: `serve --sandbox` with no configuration, on 127.0.0.1:50051 and 127.0.0.1:8080 (which
must be free), started in a scratch directory (its facegate-sandbox.db lands there) with no FACEGATE_* variable.
Needs grpcurl, buf, jq and curl on PATH.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

GRPC = ("127.0.0.1", 50051)
HTTP = ("127.0.0.1", 8080)
BLOCK_TIMEOUT = 90
START_TIMEOUT = 60
MARKER = re.compile(r"^<!--\s*ci:\s*(run|skip)\b(.*?)-->\s*$")
EXPECT = re.compile(r'expect="([^"]*)"')
CALLS_SERVICE = re.compile(r"(^|[\s$(|;&])(grpcurl|buf\s+curl)\s")
# What grpcurl and buf print for a detail message type they cannot resolve through reflection.
UNDECODED = "is not recognized; see @value"


class Block:
    def __init__(self, line, lang, text, marker, args):
        self.line, self.lang, self.text, self.marker, self.args = line, lang, text, marker, args

    def expects(self):
        return EXPECT.findall(self.args)


def blocks(readme):
    """The fenced blocks of the README, with the ci marker on the nearest non-blank line before each."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        start, close, lang = i, fence.group(1), fence.group(2)
        j = i + 1
        while j < len(lines) and not lines[j].startswith(close):
            j += 1
        if j == len(lines):
            sys.exit(f"{readme.name}:{start + 1}: the fence opened here is never closed")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        m = MARKER.match(lines[k].strip()) if k >= 0 else None
        out.append(Block(start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                         m.group(1) if m else None, m.group(2) if m else ""))
        i = j + 1
    return out


def port_free(addr):
    with socket.socket() as s:
        # As the server binds (tokio sets SO_REUSEADDR): connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
            return True
        except OSError:
            return False


def wait_serving(proc, log):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"facegate serve --sandbox exited with {proc.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(f"http://{HTTP[0]}:{HTTP[1]}/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"facegate serve --sandbox did not answer /healthz in {START_TIMEOUT} s:\n{log.read_text()}")


def run(script, cwd, env):
    """(exit code, combined output) of a script in bash -euo pipefail; a timeout is a failure."""
    try:
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT)
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        return None, out + f"\n(still running after {BLOCK_TIMEOUT} s)"


def check(name, script, expects, cwd, env):
    code, out = run(script, cwd, env)
    print(f"--- {name}\n{script.rstrip()}\n--- output\n{out.rstrip()}")
    problems = []
    if code != 0:
        problems.append(f"exit {code}" if code is not None else "timed out")
    problems += [f"no {e!r} in the output" for e in expects if e not in out]
    if UNDECODED in out:
        problems.append("an error detail was not decoded (reflection lacks its type)")
    if problems:
        print(f"FAILED: {name}: {'; '.join(problems)}")
        return False
    print(f"ok: {name}")
    return True


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    binary = Path(sys.argv[1]).resolve()
    readme = Path(sys.argv[2] if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent / "README.md")
    for tool in ("grpcurl", "buf", "jq", "curl", "bash"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (README: Trying it says how to install it)")

    all_blocks = blocks(readme)
    unmarked = [b for b in all_blocks if b.marker is None and CALLS_SERVICE.search(b.text)]
    for b in unmarked:
        print(f"{readme.name}:{b.line}: this block calls grpcurl or buf curl but has no `<!-- ci: run -->` or "
              f"`<!-- ci: skip: why -->` before it")
    to_run = [b for b in all_blocks if b.marker == "run"]
    wrong_lang = [b for b in to_run if b.lang not in ("sh", "bash")]
    for b in wrong_lang:
        print(f"{readme.name}:{b.line}: a `ci: run` block must be ```sh or ```bash, not {b.lang or 'unlabelled'}")
    # zsh (macOS's shell) takes `#` as a word, not a comment, at its interactive prompt (no interactive_comments):
    # a pasted comment would become arguments. Explanations go in the prose around the block.
    commented = [b for b in to_run if re.search(r"(^|\s)#", b.text)]
    for b in commented:
        print(f"{readme.name}:{b.line}: a `ci: run` block must have no shell comments (zsh pastes them as arguments)")
    if unmarked or wrong_lang or commented:
        sys.exit(1)
    if not to_run:
        sys.exit("README.md has no `<!-- ci: run -->` block")
    for addr in (GRPC, HTTP):
        if not port_free(addr):
            sys.exit(f"{addr[0]}:{addr[1]} is in use: the README's commands need serve --sandbox's default ports")

    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGATE")}
    work = Path(tempfile.mkdtemp(prefix="readme-check-"))
    log = work / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(binary), "serve", "--sandbox"], cwd=work, env=env,
                                  stdout=subprocess.PIPE, stderr=out)
    failed = []
    try:
        wait_serving(server, log)
        # The start-up help is on stdout (printed once the server serves): its three grpcurl calls, one a line.
        stdout = []
        threading.Thread(target=lambda: stdout.extend(
            line.decode("utf-8", "replace").rstrip("\n") for line in server.stdout), daemon=True).start()
        deadline = time.monotonic() + 10
        printed = []
        while len(printed) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            printed = [line for line in list(stdout) if line.startswith("grpcurl ")]
        if len(printed) < 3:
            failed.append("serve --sandbox printed fewer than three grpcurl calls")
            print("FAILED: serve --sandbox help:\n" + "\n".join(stdout))
        for n, line in enumerate(printed, 1):
            if not check(f"grpcurl call {n} printed by serve --sandbox", line, ["ses_"], work, env):
                failed.append(f"printed call {n}")
        for b in to_run:
            if not check(f"{readme.name}:{b.line}", b.text, b.expects(), work, env):
                failed.append(f"{readme.name}:{b.line}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if failed:
        print(f"\nserver log ({log}):\n{log.read_text(errors='replace')[-20000:]}")
        sys.exit(f"README check FAILED: {', '.join(failed)}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"README check: {len(to_run)} blocks and {len(printed)} printed calls ran as documented")


if __name__ == "__main__":
    main()
