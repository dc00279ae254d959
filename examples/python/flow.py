#!/usr/bin/env python3
"""A complete facegate sandbox flow from Python, with stubs generated from proto/ by grpcio-tools.

Usage: python flow.py [GRPC_TARGET]   (default 127.0.0.1:50051; the server runs `facegate serve --sandbox`)
       FACEGATE_API_KEY=<key> python flow.py ...   authenticates as a configured caller (`authorization: Bearer`)

1. Juhe: one StartSession with the identity and the face inline; the reply is final.
2. Baidu: StartSession -> AWAITING_USER with a user_url; StreamStatus watches while this script plays the end user
   on the sandbox H5 page (GET the page, POST its form with "pass"); the stream ends VERIFIED; GetResult.
3. SandboxService, no browser and no page request: ListScenarios, then one Baidu or Megvii session per page outcome
   it lists, completed with SimulateOutcome and checked against what the list says it produces; and a Baidu
   `kyc_retry` session that fails twice, then passes.
Requirements: pip install grpcio==1.85.* grpcio-tools==1.85.*
"""
import os
import sys
import tempfile
import threading
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")
TARGET = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"

# Generate the stubs from proto/ with grpcio-tools (the well-known types ship with it).
from grpc_tools import protoc  # noqa: E402
import grpc_tools  # noqa: E402

OUT = tempfile.mkdtemp(prefix="facegate-py-stubs-")
WKT = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
files = [f"facegate/v1/{f}" for f in sorted(os.listdir(os.path.join(PROTO, "facegate/v1"))) if f.endswith(".proto")]
if protoc.main(["protoc", f"-I{PROTO}", f"-I{WKT}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", *files]):
    sys.exit("protoc failed")
sys.path.insert(0, OUT)

import grpc  # noqa: E402
from facegate.v1 import common_pb2 as common  # noqa: E402
from facegate.v1 import sandbox_service_pb2 as sandbox  # noqa: E402
from facegate.v1 import sandbox_service_pb2_grpc as sandbox_grpc  # noqa: E402
from facegate.v1 import vendor_options_pb2 as options  # noqa: E402
from facegate.v1 import verification_service_pb2 as api  # noqa: E402
from facegate.v1 import verification_service_pb2_grpc as api_grpc  # noqa: E402

# A synthetic sandbox identity (born 1900-01-01, sequence 001, GB 11643 check character) and a tiny JPEG.
ID_NUMBER = "110101190001010014"
JPEG = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(range(32)) + bytes([0xFF, 0xD9])
STATE = common.SessionState.Name


class BearerKey(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <key>` to every call (a plaintext loopback channel cannot carry call
    credentials, so the key travels as metadata; over TLS use grpc.access_token_call_credentials instead)."""

    def __init__(self, key):
        self.metadata = (("authorization", f"Bearer {key}"),)

    def _with_key(self, details):
        metadata = tuple(details.metadata or ()) + self.metadata
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def main():
    channel = grpc.insecure_channel(TARGET)
    key = os.environ.get("FACEGATE_API_KEY")
    if key:
        channel = grpc.intercept_channel(channel, BearerKey(key))
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = api_grpc.VerificationServiceStub(channel)
    run = os.urandom(4).hex()

    juhe = stub.StartSession(api.StartSessionRequest(
        request_id=f"py-example-{run}-juhe", vendor=common.VENDOR_JUHE,
        identity=common.Identity(name="测试用户", id_number=ID_NUMBER),
        images=[common.FaceImage(data=JPEG, role=common.IMAGE_ROLE_PROBE)]), timeout=30).session
    print(f"juhe  {juhe.id}: {STATE(juhe.state)} ({juhe.identity.id_number_masked})")
    assert juhe.state == common.SESSION_STATE_VERIFIED, juhe

    baidu = stub.StartSession(api.StartSessionRequest(
        request_id=f"py-example-{run}-baidu", vendor=common.VENDOR_BAIDU, baidu=options.BaiduOptions(plan="kyc"),
        identity=common.Identity(name="测试用户", id_number=ID_NUMBER)), timeout=30).session
    print(f"baidu {baidu.id}: {STATE(baidu.state)}, user_url {baidu.user_url}")
    assert baidu.state == common.SESSION_STATE_AWAITING_USER, baidu

    seen = []
    stream = stub.StreamStatus(api.StreamStatusRequest(session_id=baidu.id), timeout=60)
    watcher = threading.Thread(target=lambda: seen.extend(STATE(m.session.state) for m in stream))
    watcher.start()
    # The end user: open the page, press "pass" (the form POSTs to "submit" next to the page).
    page = urllib.request.urlopen(baidu.user_url, timeout=10).read().decode()
    assert 'id="pass"' in page
    page_url, query = baidu.user_url.split("?", 1)
    form = dict(urllib.parse.parse_qsl(query), outcome="pass")
    urllib.request.urlopen(urllib.request.Request(
        page_url + "submit", data=urllib.parse.urlencode(form).encode(), method="POST"), timeout=10).read()
    watcher.join(timeout=60)
    print(f"baidu stream: {' -> '.join(seen)}")
    assert seen and seen[-1] == "SESSION_STATE_VERIFIED", seen

    result = stub.GetResult(api.GetResultRequest(session_id=baidu.id), timeout=30)
    fm = result.outcome.face_match
    print(f"baidu score {fm.score:.1f} >= {fm.threshold} (FAR {fm.threshold_false_accept_rate}), "
          f"billed {[b.item for b in result.outcome.billing if b.billed]}")
    assert fm.passed

    simulate_every_page_outcome(stub, sandbox_grpc.SandboxServiceStub(channel), run)
    print("python example: OK")


def start_for(stub, vendor, request_id, plan="kyc"):
    """A Baidu or Megvii session with the identity inline, waiting for its user."""
    request = api.StartSessionRequest(
        request_id=request_id, vendor=vendor, identity=common.Identity(name="测试用户", id_number=ID_NUMBER))
    if vendor == common.VENDOR_BAIDU:
        request.baidu.CopyFrom(options.BaiduOptions(plan=plan))
    else:  # Megvii says why a flow FAILED only when asked (ListScenarios' results assume it is).
        request.megvii.CopyFrom(options.MegviiOptions(get_fail_reason=True))
    session = stub.StartSession(request, timeout=30).session
    assert session.state == common.SESSION_STATE_AWAITING_USER, session
    return session


def produced(stub, session):
    """What a session came to, spelled as ListScenarios spells results ("FAILED FACE_MISMATCH (billed)")."""
    text = STATE(session.state).removeprefix("SESSION_STATE_")
    if session.HasField("failure"):
        text += " " + common.FailureCode.Name(session.failure.code).removeprefix("FAILURE_CODE_")
    billing = stub.GetResult(api.GetResultRequest(session_id=session.id), timeout=30).outcome.billing
    return text + (" (billed)" if any(b.billed for b in billing) else "")


def simulate_every_page_outcome(stub, sandbox_stub, run):
    scenarios = sandbox_stub.ListScenarios(sandbox.ListScenariosRequest(), timeout=30)
    print(f"sandbox: {len(scenarios.juhe_identities)} Juhe identities, {len(scenarios.page_outcomes)} page outcomes")
    assert scenarios.page_outcomes
    for i, scenario in enumerate(scenarios.page_outcomes):
        session = start_for(stub, scenario.vendor, f"py-example-{run}-sim-{i}")
        after = sandbox_stub.SimulateOutcome(
            sandbox.SimulateOutcomeRequest(session_id=session.id, outcome=scenario.outcome), timeout=30).session
        got = produced(stub, after)
        print(f"  {common.Vendor.Name(scenario.vendor):13} {scenario.page_value:19} -> {got}")
        assert got == scenario.result, (scenario, got)
    # A plan that keeps its URL after a failed attempt: the user tries again on the same page.
    retry = start_for(stub, common.VENDOR_BAIDU, f"py-example-{run}-retry", plan="kyc_retry")
    for outcome in (sandbox.SIMULATED_OUTCOME_FACE_MISMATCH, sandbox.SIMULATED_OUTCOME_LIVENESS_FAILED,
                    sandbox.SIMULATED_OUTCOME_PASS):
        retry = sandbox_stub.SimulateOutcome(
            sandbox.SimulateOutcomeRequest(session_id=retry.id, outcome=outcome), timeout=30).session
        print(f"  kyc_retry {sandbox.SimulatedOutcome.Name(outcome)} -> {STATE(retry.state)} "
              f"{retry.last_attempt_error.reason}")
    assert retry.state == common.SESSION_STATE_VERIFIED, retry


if __name__ == "__main__":
    main()
