#!/usr/bin/env node
// A complete facegate sandbox flow from Node.js: @grpc/proto-loader builds the service from proto/ at start-up and
// @grpc/grpc-js talks to `facegate serve --sandbox`.
//
// Usage: node flow.js [GRPC_TARGET]   (default 127.0.0.1:50051)
//        FACEGATE_API_KEY=<key> node flow.js ...   authenticates as a configured caller (`authorization: Bearer`)
//
// 1. Juhe: one StartSession with the identity and the face inline; the reply is final.
// 2. Baidu: StartSession -> AWAITING_USER with a user_url; StreamStatus watches while this script plays the end
//    user on the sandbox H5 page (GET the page, POST its form with "pass"); the stream ends VERIFIED; GetResult.
// 3. SandboxService, no browser and no page request: ListScenarios, then one Baidu or Megvii session per page
//    outcome it lists, completed with SimulateOutcome and checked against what the list says it produces; and a
//    Baidu `kyc_retry` session that fails twice, then passes.
'use strict';

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const target = process.argv[2] || '127.0.0.1:50051';
const definition = protoLoader.loadSync(['facegate/v1/verification_service.proto', 'facegate/v1/sandbox_service.proto'], {
  includeDirs: [path.join(__dirname, '..', '..', 'proto')],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { VerificationService, SandboxService } = grpc.loadPackageDefinition(definition).facegate.v1;
// The caller's key travels as `authorization: Bearer <key>` on every call. An interceptor adds it, because a
// plaintext loopback channel cannot carry call credentials; over TLS use grpc.credentials.combineChannelCredentials.
const apiKey = process.env.FACEGATE_API_KEY;
const bearer = (options, nextCall) =>
  new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('authorization', `Bearer ${apiKey}`);
      next(metadata, listener);
    },
  });
const client = new VerificationService(target, grpc.credentials.createInsecure(), {
  interceptors: apiKey ? [bearer] : [],
});
const sandbox = new SandboxService(target, grpc.credentials.createInsecure(), {
  interceptors: apiKey ? [bearer] : [],
});

// A synthetic sandbox identity (born 1900-01-01, sequence 001, GB 11643 check character) and a tiny JPEG.
const ID_NUMBER = '110101190001010014';
const JPEG = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.from([...Array(32).keys()]), Buffer.from([0xff, 0xd9])]);

const callOn = (service, method, request) =>
  new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30_000);
    service[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
const call = (method, request) => callOn(client, method, request);

function check(cond, what) {
  if (!cond) {
    throw new Error(`check failed: ${what}`);
  }
}

async function main() {
  const run = crypto.randomBytes(4).toString('hex');

  const juhe = (await call('StartSession', {
    request_id: `node-example-${run}-juhe`,
    vendor: 'VENDOR_JUHE',
    identity: { name: '测试用户', id_number: ID_NUMBER },
    images: [{ data: JPEG, role: 'IMAGE_ROLE_PROBE' }],
  })).session;
  console.log(`juhe  ${juhe.id}: ${juhe.state} (${juhe.identity.id_number_masked})`);
  check(juhe.state === 'SESSION_STATE_VERIFIED', 'the Juhe session is verified');

  const baidu = (await call('StartSession', {
    request_id: `node-example-${run}-baidu`,
    vendor: 'VENDOR_BAIDU',
    baidu: { plan: 'kyc' },
    identity: { name: '测试用户', id_number: ID_NUMBER },
  })).session;
  console.log(`baidu ${baidu.id}: ${baidu.state}, user_url ${baidu.user_url}`);
  check(baidu.state === 'SESSION_STATE_AWAITING_USER', 'the Baidu session awaits the user');

  const seen = [];
  const streamed = new Promise((resolve, reject) => {
    const stream = client.StreamStatus({ session_id: baidu.id }, { deadline: new Date(Date.now() + 60_000) });
    stream.on('data', (m) => seen.push(m.session.state));
    stream.on('end', resolve);
    stream.on('error', reject);
  });

  // The end user: open the page, press "pass" (the form POSTs to "submit" next to the page).
  const page = await (await fetch(baidu.user_url)).text();
  check(page.includes('id="pass"'), 'the page offers pass');
  const [pageUrl, query] = baidu.user_url.split('?');
  const form = new URLSearchParams(query);
  form.set('outcome', 'pass');
  const submitted = await fetch(`${pageUrl}submit`, { method: 'POST', body: form, redirect: 'follow' });
  check(submitted.ok, `the page accepted the outcome (${submitted.status})`);

  await streamed;
  console.log(`baidu stream: ${seen.join(' -> ')}`);
  check(seen[seen.length - 1] === 'SESSION_STATE_VERIFIED', 'the stream ends VERIFIED');

  const result = await call('GetResult', { session_id: baidu.id });
  const fm = result.outcome.face_match;
  console.log(`baidu score ${fm.score.toFixed(1)} >= ${fm.threshold} (FAR ${fm.threshold_false_accept_rate})`);
  check(fm.passed, 'the face matched');

  await simulateEveryPageOutcome(run);
  console.log('node example: OK');
}

// A Baidu or Megvii session with the identity inline, waiting for its user.
async function startFor(vendor, requestId, plan = 'kyc') {
  const request = { request_id: requestId, vendor, identity: { name: '测试用户', id_number: ID_NUMBER } };
  if (vendor === 'VENDOR_BAIDU') {
    request.baidu = { plan };
  } else {
    // Megvii says why a flow FAILED only when asked (ListScenarios' results assume it is).
    request.megvii = { get_fail_reason: true };
  }
  const { session } = await call('StartSession', request);
  check(session.state === 'SESSION_STATE_AWAITING_USER', `${vendor} awaits the user`);
  return session;
}

// What a session came to, spelled as ListScenarios spells results ("FAILED FACE_MISMATCH (billed)").
async function produced(session) {
  let text = session.state.replace(/^SESSION_STATE_/, '');
  if (session.failure) {
    text += ` ${session.failure.code.replace(/^FAILURE_CODE_/, '')}`;
  }
  const { outcome } = await call('GetResult', { session_id: session.id });
  return text + (outcome.billing.some((b) => b.billed) ? ' (billed)' : '');
}

async function simulateEveryPageOutcome(run) {
  const scenarios = await callOn(sandbox, 'ListScenarios', {});
  console.log(`sandbox: ${scenarios.juhe_identities.length} Juhe identities, ${scenarios.page_outcomes.length} page outcomes`);
  check(scenarios.page_outcomes.length > 0, 'the sandbox lists page outcomes');
  for (const [i, scenario] of scenarios.page_outcomes.entries()) {
    const session = await startFor(scenario.vendor, `node-example-${run}-sim-${i}`);
    const after = (await callOn(sandbox, 'SimulateOutcome', { session_id: session.id, outcome: scenario.outcome })).session;
    const got = await produced(after);
    console.log(`  ${scenario.vendor.padEnd(13)} ${scenario.page_value.padEnd(19)} -> ${got}`);
    check(got === scenario.result, `${scenario.vendor} ${scenario.page_value} produces ${scenario.result}, not ${got}`);
  }
  // A plan that keeps its URL after a failed attempt: the user tries again on the same page.
  let retry = await startFor('VENDOR_BAIDU', `node-example-${run}-retry`, 'kyc_retry');
  for (const outcome of ['SIMULATED_OUTCOME_FACE_MISMATCH', 'SIMULATED_OUTCOME_LIVENESS_FAILED', 'SIMULATED_OUTCOME_PASS']) {
    retry = (await callOn(sandbox, 'SimulateOutcome', { session_id: retry.id, outcome })).session;
    const reason = retry.last_attempt_error ? retry.last_attempt_error.reason : '';
    console.log(`  kyc_retry ${outcome} -> ${retry.state} ${reason}`);
  }
  check(retry.state === 'SESSION_STATE_VERIFIED', 'the kyc_retry session passes at the third attempt');
}

main()
  .then(() => {
    client.close();
    sandbox.close();
  })
  .catch((err) => {
    console.error(err);
    client.close();
    sandbox.close();
    process.exit(1);
  });
