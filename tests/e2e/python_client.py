#!/usr/bin/env python3
"""End-to-end check with a client generated from proto/ by Python's own gRPC toolchain (grpcio-tools).

Starts `facegate serve --sandbox` on free ports with a fresh database, then drives inline and stepwise Juhe flows,
every documented sandbox scenario, error details (google.rpc.ErrorInfo / RetryInfo), Baidu and Megvii pass and fail
flows through the sandbox H5 pages (as a browser would: GET the page, POST its form, follow the redirects) with a
StreamStatus watcher, server reflection through grpcurl, and a kill -9 + restart that must keep every session.

Usage: python_client.py PATH_TO_FACEGATE_BINARY
"""
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/facegate")
WORK = tempfile.mkdtemp(prefix="facegate-e2e-")
GEN = os.path.join(WORK, "gen")
os.makedirs(GEN)

from grpc_tools import protoc  # noqa: E402
import grpc_tools  # noqa: E402

wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
protos = [os.path.join("facegate/v1", f) for f in sorted(os.listdir(os.path.join(ROOT, "proto/facegate/v1")))]
rc = protoc.main(["protoc", f"-I{ROOT}/proto", f"-I{wkt}", f"--python_out={GEN}", f"--grpc_python_out={GEN}", *protos])
if rc != 0:
    sys.exit(f"protoc failed: {rc}")
sys.path.insert(0, GEN)

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from facegate.v1 import common_pb2 as common  # noqa: E402
from facegate.v1 import verification_service_pb2 as svc  # noqa: E402
from facegate.v1 import verification_service_pb2_grpc as svc_grpc  # noqa: E402
from facegate.v1 import vendor_options_pb2 as opts  # noqa: E402

PASSED = 0
FAILED = 0


def check(name, cond, detail=""):
    global PASSED, FAILED
    if cond:
        PASSED += 1
    else:
        FAILED += 1
        print(f"FAIL {name} {detail}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gb11643(first17):
    w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return "10X98765432"[sum(int(c) * x for c, x in zip(first17, w)) % 11]


def test_id(seq):
    first17 = f"11010119000101{seq:03d}"
    return first17 + gb11643(first17)


JPEG = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(range(32)) + bytes([0xFF, 0xD9])
GRPC_PORT, HTTP_PORT = free_port(), free_port()
DB = os.path.join(WORK, "facegate.db")
# A data key generated for this run: the restart after kill -9 must read the sessions sealed before it.
STORE_KEY = "e2e:" + base64.b64encode(os.urandom(32)).decode()


def start_server():
    env = dict(os.environ)
    env.update({
        "FACEGATE__GRPC__LISTEN": f"127.0.0.1:{GRPC_PORT}",
        "FACEGATE__HTTP__LISTEN": f"127.0.0.1:{HTTP_PORT}",
        "FACEGATE__STORE__SQLITE_PATH": DB,
        "FACEGATE__STORE__ENCRYPTION_KEYS": STORE_KEY,
    })
    log = open(os.path.join(WORK, "server.log"), "ab")
    proc = subprocess.Popen([BIN, "serve", "--sandbox"], env=env, stdout=log, stderr=log)
    channel = grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}")
    try:
        grpc.channel_ready_future(channel).result(timeout=60)
    except grpc.FutureTimeoutError:
        proc.kill()
        sys.exit("server did not start; log in " + os.path.join(WORK, "server.log"))
    return proc, channel


def error_info(err):
    status = rpc_status.from_call(err)
    infos, retry = [], None
    for d in status.details if status else []:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            infos.append(info)
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            d.Unpack(retry)
    return infos, retry


def inline(stub, rid, seq, far=0.0, mode=opts.JUHE_MODE_UNSPECIFIED):
    return stub.StartSession(svc.StartSessionRequest(
        request_id=rid, vendor=common.VENDOR_JUHE,
        juhe=opts.JuheOptions(mode=mode),
        identity=common.Identity(name="测试用户", id_number=test_id(seq)),
        images=[common.FaceImage(data=JPEG, role=common.IMAGE_ROLE_PROBE)],
        target_false_accept_rate=far,
    ), timeout=30).session


proc, channel = start_server()
stub = svc_grpc.VerificationServiceStub(channel)
run = str(int(time.time() * 1000))
sessions = {}

# Inline flows: every outcome scenario.
outcomes = [
    (1, 0.0, common.SESSION_STATE_VERIFIED, common.FAILURE_CODE_UNSPECIFIED),
    (901, 0.0, common.SESSION_STATE_FAILED, common.FAILURE_CODE_FACE_MISMATCH),
    (902, 0.0, common.SESSION_STATE_FAILED, common.FAILURE_CODE_ID_NAME_MISMATCH),
    (903, 0.0, common.SESSION_STATE_FAILED, common.FAILURE_CODE_NO_FACE_FOUND),
    (904, 0.0, common.SESSION_STATE_FAILED, common.FAILURE_CODE_ID_PHOTO_UNAVAILABLE),
    (905, 0.0, common.SESSION_STATE_FAILED, common.FAILURE_CODE_SCORE_BELOW_THRESHOLD),
    (906, 0.0, common.SESSION_STATE_VERIFIED, common.FAILURE_CODE_UNSPECIFIED),
    (906, 0.0001, common.SESSION_STATE_FAILED, common.FAILURE_CODE_SCORE_BELOW_THRESHOLD),
]
for seq, far, want_state, want_code in outcomes:
    for mode in (opts.JUHE_MODE_PLAIN, opts.JUHE_MODE_ENCRYPTED):
        s = inline(stub, f"py-{run}-{seq}-{far}-{mode}", seq, far, mode)
        check(f"scenario {seq} far {far} mode {mode} state", s.state == want_state, str(s.state))
        check(f"scenario {seq} failure", s.failure.code == want_code, str(s.failure.code))
        check(f"scenario {seq} masked", test_id(seq) not in str(s), "unmasked ID number in session")
        sessions[s.id] = s.state

# Vendor error scenarios (the last field: whether the vendor said waiting helps).
errors = [
    (911, grpc.StatusCode.UNAVAILABLE, "VENDOR_DATA_SOURCE_TIMEOUT", True),
    (912, grpc.StatusCode.FAILED_PRECONDITION, "VENDOR_NO_RECORD", False),
    (914, grpc.StatusCode.UNAVAILABLE, "VENDOR_UNAVAILABLE", True),
    (921, grpc.StatusCode.RESOURCE_EXHAUSTED, "VENDOR_RATE_LIMITED", True),
    (922, grpc.StatusCode.RESOURCE_EXHAUSTED, "VENDOR_RATE_LIMITED", True),
    (923, grpc.StatusCode.RESOURCE_EXHAUSTED, "VENDOR_RATE_LIMITED", True),
    (924, grpc.StatusCode.UNAVAILABLE, "VENDOR_UNAVAILABLE", True),
    (925, grpc.StatusCode.UNAVAILABLE, "VENDOR_UNAVAILABLE", True),
]
for seq, code, reason, retry in errors:
    try:
        inline(stub, f"py-{run}-err-{seq}", seq)
        check(f"error {seq}", False, "call succeeded")
    except grpc.RpcError as err:
        infos, retry_info = error_info(err)
        check(f"error {seq} code", err.code() == code, str(err.code()))
        check(f"error {seq} one ErrorInfo", len(infos) == 1 and infos[0].domain == "facegate.v1", str(infos))
        check(f"error {seq} reason", infos and infos[0].reason == reason, str(infos))
        # A StartSession replay answers the same error, so none carries RetryInfo: the ErrorInfo says what to send
        # again (retryWith), and how long to wait first (retryDelay) where the vendor said waiting helps.
        check(f"error {seq} no RetryInfo", retry_info is None)
        if infos:
            check(f"error {seq} retryWith", infos[0].metadata.get("retryWith") == "UploadReference", str(infos))
            check(f"error {seq} retryDelay", ("retryDelay" in infos[0].metadata) == retry, str(infos))
        if infos:
            sessions[infos[0].metadata["sessionId"]] = common.SESSION_STATE_REQUIRES_INPUT

# Stepwise with a status stream.
s = stub.StartSession(svc.StartSessionRequest(request_id=f"py-{run}-step", vendor=common.VENDOR_JUHE)).session
check("stepwise requires inputs", list(s.required_inputs) == [common.REQUIRED_INPUT_IDENTITY, common.REQUIRED_INPUT_PROBE_IMAGE])
stream = stub.StreamStatus(svc.StreamStatusRequest(session_id=s.id), timeout=60)
first = next(stream).session
check("stream snapshot first", first.version == s.version and first.state == common.SESSION_STATE_REQUIRES_INPUT)
stub.SubmitIdentity(svc.SubmitIdentityRequest(session_id=s.id, identity=common.Identity(name="测试用户", id_number=test_id(1))))
done = stub.UploadReference(svc.UploadReferenceRequest(session_id=s.id, image=common.FaceImage(data=JPEG))).session
check("stepwise verified", done.state == common.SESSION_STATE_VERIFIED)
states = [m.session.state for m in stream]
check("stream changes then end", states[-1:] == [common.SESSION_STATE_VERIFIED] and len(states) == 2, str(states))
result = stub.GetResult(svc.GetResultRequest(session_id=s.id))
check("result score", result.outcome.face_match.score == 96.0 and result.outcome.face_match.threshold == 60.0)
check("result billing", len(result.outcome.billing) == 1 and result.outcome.billing[0].billed)
sessions[s.id] = done.state

# Cancel.
c = stub.StartSession(svc.StartSessionRequest(request_id=f"py-{run}-cancel", vendor=common.VENDOR_JUHE)).session
c = stub.CancelSession(svc.CancelSessionRequest(session_id=c.id, reason="test")).session
check("cancel", c.state == common.SESSION_STATE_CANCELED)
sessions[c.id] = c.state

# Baidu: the end user completes the sandbox H5 page while a StreamStatus watcher waits for the decision.
def baidu_flow(rid, plan, outcome, with_identity=True, reference=False):
    req = svc.StartSessionRequest(request_id=rid, vendor=common.VENDOR_BAIDU, baidu=opts.BaiduOptions(plan=plan))
    if with_identity:
        req.identity.CopyFrom(common.Identity(name="测试用户", id_number=test_id(7)))
    s = stub.StartSession(req, timeout=30).session
    if reference:
        check(f"baidu {rid} needs a reference", list(s.required_inputs) == [common.REQUIRED_INPUT_REFERENCE_IMAGE])
        s = stub.UploadReference(svc.UploadReferenceRequest(
            session_id=s.id, image=common.FaceImage(data=JPEG, role=common.IMAGE_ROLE_REFERENCE),
            quality_control=common.CONTROL_LEVEL_LOW, liveness_control=common.CONTROL_LEVEL_NORMAL), timeout=30).session
    check(f"baidu {rid} awaits the user", s.state == common.SESSION_STATE_AWAITING_USER and s.user_url, str(s))
    check(f"baidu {rid} no ID number in the URL", test_id(7) not in s.user_url)
    states = []
    stream = stub.StreamStatus(svc.StreamStatusRequest(session_id=s.id), timeout=60)
    watcher = threading.Thread(target=lambda: states.extend(m.session for m in stream))
    watcher.start()
    page = urllib.request.urlopen(s.user_url, timeout=10).read().decode()
    check(f"baidu {rid} page offers {outcome}", f'id="{outcome}"' in page)
    page_url, query = s.user_url.split("?", 1)
    form = dict(urllib.parse.parse_qsl(query))
    form["outcome"] = outcome
    if 'name="id_name"' in page:
        form.update({"id_name": "测试用户", "id_no": test_id(7)})
    # The form's POST answers 303 to facegate's relay, which urllib follows like a browser.
    done = urllib.request.urlopen(urllib.request.Request(
        page_url + "submit", data=urllib.parse.urlencode(form).encode(), method="POST"), timeout=10)
    check(f"baidu {rid} browser ends at the relay", "/v1/return/" + s.id in done.geturl(), done.geturl())
    watcher.join(timeout=60)
    check(f"baidu {rid} stream ended", not watcher.is_alive() and states, str(states))
    sessions[s.id] = states[-1].state if states else None
    return s.id, states


sid, states = baidu_flow(f"py-{run}-baidu-pass", "kyc", "pass")
check("baidu pass verified", states and states[-1].state == common.SESSION_STATE_VERIFIED, str(states))
r = stub.GetResult(svc.GetResultRequest(session_id=sid, reveal_personal_data=True, include_face_image=True,
                                        include_media=True))
check("baidu result score", r.outcome.face_match.passed and r.outcome.face_match.threshold == 80.0)
check("baidu result detail", r.outcome.baidu.verify_count == 1 and r.outcome.baidu.verify_charge_count == 1)
check("baidu result attempts", len(r.outcome.baidu.attempts) == 1 and r.outcome.baidu.attempts[0].charged)
check("baidu revealed identity", r.outcome.identity_document.id_number == test_id(7))
check("baidu face image", r.outcome.face_image[:3] == b"\xff\xd8\xff")
check("baidu media", any(m.kind == "video" for m in r.outcome.media))
masked = stub.GetResult(svc.GetResultRequest(session_id=sid)).outcome
check("baidu identity masked by default", masked.identity_document.id_number != test_id(7)
      and "*" in masked.identity_document.id_number)
for outcome, code in [("face_mismatch", common.FAILURE_CODE_FACE_MISMATCH),
                      ("liveness_failed", common.FAILURE_CODE_LIVENESS_FAILED),
                      ("id_name_mismatch", common.FAILURE_CODE_ID_NAME_MISMATCH),
                      ("abandon", common.FAILURE_CODE_USER_ABANDONED)]:
    sid, states = baidu_flow(f"py-{run}-baidu-{outcome}", "kyc", outcome)
    last = states[-1] if states else None
    check(f"baidu {outcome} failed", last is not None and last.state == common.SESSION_STATE_FAILED
          and last.failure.code == code, str(last))
sid, states = baidu_flow(f"py-{run}-baidu-ref", "reference", "pass", with_identity=False, reference=True)
check("baidu reference plan verified", states and states[-1].state == common.SESSION_STATE_VERIFIED, str(states))
r = stub.GetResult(svc.GetResultRequest(session_id=sid))
check("baidu reference billed as match", r.outcome.billing and r.outcome.billing[0].item == "match")

# Megvii: the user completes the sandbox page; the simulator's signed notify reaches facegate and ends the stream.
def megvii_flow(rid, outcome, want_state, want_code):
    s = stub.StartSession(svc.StartSessionRequest(
        request_id=rid, vendor=common.VENDOR_MEGVII, megvii=opts.MegviiOptions(get_fail_reason=True),
        identity=common.Identity(name="测试用户", id_number=test_id(8))), timeout=30).session
    check(f"megvii {rid} awaits the user", s.state == common.SESSION_STATE_AWAITING_USER and s.user_url, str(s))
    states = []
    stream = stub.StreamStatus(svc.StreamStatusRequest(session_id=s.id), timeout=60)
    watcher = threading.Thread(target=lambda: states.extend(m.session for m in stream))
    watcher.start()
    page = urllib.request.urlopen(s.user_url, timeout=10).read().decode()
    check(f"megvii {rid} page offers {outcome}", f'id="{outcome}"' in page)
    page_url, query = s.user_url.split("?", 1)
    form = dict(urllib.parse.parse_qsl(query))
    form["outcome"] = outcome
    urllib.request.urlopen(urllib.request.Request(
        page_url, data=urllib.parse.urlencode(form).encode(), method="POST"), timeout=10).read()
    watcher.join(timeout=60)
    last = states[-1] if states else None
    check(f"megvii {rid} final state", last is not None and last.state == want_state
          and last.failure.code == want_code, str(last))
    sessions[s.id] = last.state if last else None
    return s.id


sid = megvii_flow(f"py-{run}-megvii-pass", "pass", common.SESSION_STATE_VERIFIED, common.FAILURE_CODE_UNSPECIFIED)
r = stub.GetResult(svc.GetResultRequest(session_id=sid))
check("megvii result from callback", r.outcome.megvii.from_callback and r.outcome.megvii.status == "OK")
check("megvii thresholds", len(r.outcome.face_match.thresholds) == 4 and r.outcome.face_match.passed)
megvii_flow(f"py-{run}-megvii-live", "liveness_failed", common.SESSION_STATE_FAILED,
            common.FAILURE_CODE_LIVENESS_FAILED)
megvii_flow(f"py-{run}-megvii-cancel", "cancel", common.SESSION_STATE_FAILED, common.FAILURE_CODE_USER_ABANDONED)

# Reflection through grpcurl (v1alpha) lists and calls the service.
listed = subprocess.run(["grpcurl", "-plaintext", f"127.0.0.1:{GRPC_PORT}", "list", "facegate.v1.VerificationService"],
                        capture_output=True, text=True)
methods = set(listed.stdout.split())
want = {f"facegate.v1.VerificationService.{m}" for m in
        ["StartSession", "SubmitIdentity", "UploadReference", "GetResult", "StreamStatus", "CancelSession"]}
check("reflection lists every RPC", want <= methods, listed.stdout + listed.stderr)
called = subprocess.run(["grpcurl", "-plaintext", "-d", json.dumps({"session_id": s.id}), f"127.0.0.1:{GRPC_PORT}",
                         "facegate.v1.VerificationService/GetResult"], capture_output=True, text=True)
check("grpcurl call", called.returncode == 0 and "SESSION_STATE_VERIFIED" in called.stdout, called.stderr)

# Reflection v1 through buf curl lists every method.
bufcurl = subprocess.run(["buf", "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods",
                          f"http://127.0.0.1:{GRPC_PORT}"], capture_output=True, text=True)
buf_methods = {m.replace("/", ".") for m in bufcurl.stdout.split()}
check("buf curl (reflection v1) lists every RPC", want <= buf_methods, bufcurl.stdout + bufcurl.stderr)

# Kill -9 and restart: every session is still there.
proc.kill()
proc.wait()
channel.close()
proc, channel = start_server()
stub = svc_grpc.VerificationServiceStub(channel)
for sid, want_state in sessions.items():
    got = stub.GetResult(svc.GetResultRequest(session_id=sid)).session
    check(f"after restart {sid}", got.state == want_state, f"{got.state} != {want_state}")
proc.terminate()
try:
    code = proc.wait(timeout=30)
    check("graceful exit on SIGTERM", code == 0, str(code))
except subprocess.TimeoutExpired:
    proc.kill()
    check("graceful exit on SIGTERM", False, "timeout")

print(f"{PASSED} passed, {FAILED} failed")
sys.exit(1 if FAILED else 0)
