//! `GET /metrics`: the text exposition parsed strictly, and every count equal to the calls made (as the test made
//! them and as the vendor simulators saw them). Metrics are process-wide: this binary has one test.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use facegate::proto::v1 as pb;
use facegate::sandbox::megvii::PageOutcome;
use tokio_stream::StreamExt;

type Labels = BTreeMap<String, String>;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// A scrape, checked line by line against the text format 0.0.4.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    is_metric_name(s) && !s.contains(':')
}

/// `{name="value",...}` up to its closing brace; returns the labels and the rest of the line.
fn parse_labels(s: &str) -> (Labels, &str) {
    let mut labels = Labels::new();
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        if !labels.is_empty() {
            rest = rest
                .strip_prefix(',')
                .expect("labels are separated by commas");
        }
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(is_label_name(name), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("label value is closed") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escape is complete").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("invalid escape \\{other}"),
                },
                (_, c) => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label {name} repeated"
        );
        rest = &after[end + 1..];
    }
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap_or_else(|_| panic!("invalid value {s:?}")),
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    panic!("sample {name} has no # TYPE before it");
}

fn parse(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut e = Exposition::default();
    let mut helps = HashMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        assert!(!line.is_empty(), "no empty lines");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(is_metric_name(name), "{name}");
            assert!(!help.is_empty());
            assert!(helps.insert(name.to_owned(), help.to_owned()).is_none());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(is_metric_name(name), "{name}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{kind}"
            );
            assert!(
                e.types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "one TYPE per family"
            );
            assert!(
                !e.samples
                    .iter()
                    .any(|s| family_of(&s.name, &e.types) == name),
                "TYPE before the samples"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            continue;
        }
        assert!(
            !line.starts_with('#'),
            "only HELP and TYPE comments: {line}"
        );
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("sample line {line:?}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "{name}");
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after),
            None => (Labels::new(), &line[name_end..]),
        };
        let value = rest.strip_prefix(' ').expect("one space before the value");
        assert!(!value.contains(' '), "no timestamps: {line}");
        let value = parse_value(value);
        let family = family_of(name, &e.types).to_owned();
        assert!(helps.contains_key(&family), "HELP for {family}");
        // A family's samples are contiguous.
        if current.as_deref() != Some(family.as_str()) {
            assert!(!finished.contains(&family), "{family} is split");
            if let Some(done) = current.replace(family.clone()) {
                finished.push(done);
            }
        }
        assert!(
            !e.samples
                .iter()
                .any(|s| s.name == name && s.labels == labels),
            "duplicate sample {line}"
        );
        e.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    e.check_histograms();
    e
}

impl Exposition {
    /// Every histogram series: buckets in increasing `le`, cumulative, ending with `+Inf` equal to `_count`, and a
    /// `_sum`.
    fn check_histograms(&self) {
        for (family, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
            {
                let mut labels = s.labels.clone();
                let le = parse_value(&labels.remove("le").expect("a bucket has le"));
                series.entry(labels).or_default().push((le, s.value));
            }
            for (labels, buckets) in series {
                assert!(
                    buckets.windows(2).all(|w| w[0].0 < w[1].0),
                    "{family} buckets in order"
                );
                assert!(
                    buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                    "{family} buckets are cumulative"
                );
                let (le, last) = *buckets.last().unwrap();
                assert_eq!(le, f64::INFINITY, "{family} ends with +Inf");
                assert_eq!(
                    Some(last),
                    self.value(&format!("{family}_count"), &labels),
                    "{family} +Inf == _count for {labels:?}"
                );
                assert!(self.value(&format!("{family}_sum"), &labels).is_some());
            }
        }
    }

    fn value(&self, name: &str, labels: &Labels) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && &s.labels == labels)
            .map(|s| s.value)
    }

    /// The value of a sample with exactly these labels (0 when absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.value(name, &labels).unwrap_or(0.0)
    }

    /// The sum over the samples of `name` whose labels include these.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

async fn scrape(srv: &Server) -> Exposition {
    let r = reqwest::get(format!("http://{}/metrics", srv.running().http_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&r.text().await.unwrap())
}

#[test]
fn the_parser_rejects_what_the_format_does_not_allow() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert_eq!(parse(ok).get("a_total", &[("x", "1")]), 2.0);
    for bad in [
        "a_total 1\n",                                                    // no TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=1} 2\n",   // unquoted
        "# HELP a_total A.\n# TYPE a_total counter\na_total 2 123\n",    // timestamp
        "# HELP a A.\n# TYPE a counter\na 2\n",                          // counter without _total
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_equal_the_calls_made() {
    let mut srv = Server::start_fast().await;
    let before = scrape(&srv).await;
    assert_eq!(
        before.get("facegate_status_streams_open", &[]),
        0.0,
        "a fresh process"
    );
    assert_eq!(before.sum("facegate_rpc_requests_total", &[]), 0.0);

    // Juhe: verified, failed (both billed), and a data-source timeout (not billed; the session waits for input).
    for (i, seq) in [1u16, 902, 911].into_iter().enumerate() {
        let _ = srv
            .client
            .start_session(juhe_inline(&format!("m-juhe-{i}"), seq))
            .await;
    }
    // Baidu: StartSession, the page, the relay, a status stream to the end, GetResult.
    let b = srv.start_ok(baidu_inline("m-baidu", "", 1)).await;
    let browser = Browser::new();
    let mut client = srv.client.clone();
    let mut stream = client
        .stream_status(pb::StreamStatusRequest {
            session_id: b.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    let open = scrape(&srv).await;
    assert_eq!(open.get("facegate_status_streams_open", &[]), 1.0);
    let relay = browser.choose(&b.user_url, "pass").await;
    browser.follow(&relay).await;
    let mut last = None;
    while let Some(msg) = stream.next().await {
        last = msg.unwrap().session;
    }
    assert_eq!(state(&last.unwrap()), pb::SessionState::Verified);
    srv.client
        .get_result(pb::GetResultRequest {
            session_id: b.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let missing = srv.client.get_result(missing_session()).await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    // Megvii: get_token, the signed notify, the browser's POST of the same signed form to the return URL (the
    // default action_http_method), and a forged notify.
    let m = srv.start_ok(megvii_inline("m-megvii", 1)).await;
    let flow = srv
        .megvii()
        .complete(&token_of(&m.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    assert_eq!(flow.return_method, "POST");
    let returned = browser
        .http
        .post(&flow.return_url)
        .form(&flow.form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        returned.status(),
        200,
        "facegate's own page: the session has no return URL"
    );
    let forged = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/callbacks/megvii/notify",
            srv.running().http_addr
        ))
        .form(&[("data", "{\"biz_no\":\"x\"}"), ("sign", "0000")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // The stream's task ends right after its last message.
    let mut after = scrape(&srv).await;
    for _ in 0..500 {
        if after.get("facegate_status_streams_open", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = scrape(&srv).await;
    }
    let m = &after;
    assert_eq!(m.get("facegate_status_streams_open", &[]), 0.0);

    // RPCs by method and code; every histogram series counts the same calls.
    let rpc = |method: &str, code: &str| {
        m.get(
            "facegate_rpc_requests_total",
            &[("method", method), ("code", code), ("tenant", "default")],
        )
    };
    assert_eq!(rpc("StartSession", "OK"), 4.0);
    assert_eq!(rpc("StartSession", "UNAVAILABLE"), 1.0);
    assert_eq!(rpc("StreamStatus", "OK"), 1.0);
    assert_eq!(rpc("GetResult", "OK"), 1.0);
    assert_eq!(rpc("GetResult", "NOT_FOUND"), 1.0);
    assert_eq!(m.sum("facegate_rpc_requests_total", &[]), 8.0);
    for s in m
        .samples
        .iter()
        .filter(|s| s.name == "facegate_rpc_requests_total")
    {
        assert_eq!(
            m.value("facegate_rpc_duration_seconds_count", &s.labels),
            Some(s.value)
        );
    }

    // Vendor calls: what the simulators received.
    let juhe = srv.juhe_stats();
    assert_eq!(juhe.verify_encry_calls, 3);
    assert_eq!(
        m.sum(
            "facegate_vendor_requests_total",
            &[("vendor", "juhe"), ("endpoint", "verifyface/verifyEncry")]
        ),
        3.0
    );
    assert_eq!(
        m.get(
            "facegate_vendor_requests_total",
            &[
                ("vendor", "juhe"),
                ("endpoint", "verifyface/verifyEncry"),
                ("outcome", "ok"),
                ("tenant", "default")
            ]
        ),
        3.0,
        "an error answer is still an HTTP 200"
    );
    let baidu = srv.baidu().stats();
    assert_eq!(
        m.get(
            "facegate_vendor_requests_total",
            &[
                ("vendor", "baidu"),
                ("endpoint", "oauth/2.0/token"),
                ("outcome", "ok"),
                ("tenant", "default")
            ]
        ),
        baidu.token_requests as f64
    );
    assert_eq!(baidu.token_requests, 1);
    for (path, n) in &baidu.calls {
        assert_eq!(
            m.get(
                "facegate_vendor_requests_total",
                &[
                    ("vendor", "baidu"),
                    ("endpoint", path),
                    ("outcome", "ok"),
                    ("tenant", "default")
                ]
            ),
            *n as f64,
            "{path}"
        );
    }
    let baidu_total: u64 = baidu.calls.values().sum::<u64>() + baidu.token_requests;
    assert_eq!(
        m.sum("facegate_vendor_requests_total", &[("vendor", "baidu")]),
        baidu_total as f64
    );
    let megvii = srv.megvii().stats();
    assert_eq!(megvii.get_token, 1);
    assert_eq!(
        m.get(
            "facegate_vendor_requests_total",
            &[
                ("vendor", "megvii"),
                ("endpoint", "get_token"),
                ("outcome", "ok"),
                ("tenant", "default")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.sum("facegate_vendor_requests_total", &[("vendor", "megvii")]),
        1.0
    );
    for s in m
        .samples
        .iter()
        .filter(|s| s.name == "facegate_vendor_request_duration_seconds_count")
    {
        let calls = m.sum(
            "facegate_vendor_requests_total",
            &[
                ("vendor", s.labels["vendor"].as_str()),
                ("endpoint", s.labels["endpoint"].as_str()),
            ],
        );
        assert_eq!(s.value, calls, "{:?}", s.labels);
    }

    // Billing: Juhe bills every answer without an error code; Baidu the passed attempt; Megvii the finished flow.
    let billed = |vendor: &str| {
        m.get(
            "facegate_vendor_billed_total",
            &[("vendor", vendor), ("tenant", "default")],
        )
    };
    assert_eq!(billed("juhe"), juhe.billed_calls as f64);
    assert_eq!(billed("juhe"), 2.0);
    assert_eq!(billed("baidu"), baidu.billed as f64);
    assert_eq!(billed("baidu"), 1.0);
    assert_eq!(billed("megvii"), 1.0);

    // Polls: Baidu's result queries (one result/getall each); Megvii decided by its callback, never polled.
    let polls = |vendor: &str| m.sum("facegate_status_polls_total", &[("vendor", vendor)]);
    assert!(polls("baidu") >= 1.0);
    assert_eq!(
        polls("baidu"),
        baidu.calls.get("result/getall").copied().unwrap_or(0) as f64
    );
    assert_eq!(polls("megvii"), 0.0);
    assert_eq!(polls("juhe"), 0.0);
    assert!(
        m.get(
            "facegate_status_polls_total",
            &[("vendor", "baidu"), ("result", "final")]
        ) >= 1.0,
        "the query that decided the Baidu session counts as final"
    );

    // One Megvii flow: its notify once and its browser return once, each under its own source.
    let callbacks = |source: &str, result: &str| {
        m.get(
            "facegate_callbacks_total",
            &[("vendor", "megvii"), ("source", source), ("result", result)],
        )
    };
    assert_eq!(callbacks("notify", "verified"), megvii.notify_sent as f64);
    assert_eq!(callbacks("notify", "verified"), 1.0);
    assert_eq!(callbacks("notify", "rejected"), 1.0, "the forged one");
    assert_eq!(callbacks("return_relay", "verified"), 1.0);
    assert_eq!(callbacks("return_relay", "rejected"), 0.0);
    assert_eq!(
        m.sum(
            "facegate_callbacks_total",
            &[("vendor", "megvii"), ("result", "verified")]
        ),
        2.0,
        "two arrivals, not more"
    );

    // The build and the process.
    let build: Vec<&Sample> = m
        .samples
        .iter()
        .filter(|s| s.name == "facegate_build_info")
        .collect();
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].value, 1.0);
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    let commit = &build[0].labels["git_commit"];
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    assert_eq!(m.types["facegate_build_info"], "gauge");
    assert_eq!(m.types["process_cpu_seconds_total"], "counter");
    // The server runs in this process: its numbers are this test's.
    assert!(
        m.get("process_cpu_seconds_total", &[]) > 0.0,
        "flows took CPU"
    );
    let rss = m.get("process_resident_memory_bytes", &[]);
    assert!(rss > 1024.0 * 1024.0, "{rss}");
    let open = m.get("process_open_fds", &[]);
    let listed = std::fs::read_dir("/proc/self/fd").unwrap().count() as f64;
    assert!(open >= 5.0, "listeners, store, connections: {open}");
    assert!(open <= m.get("process_max_fds", &[]));
    assert!((open - listed).abs() < 64.0, "{open} vs {listed} now");
    let started = m.get("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now && started > now - 3600.0,
        "{started} vs {now}"
    );

    // Sessions by state, from the store.
    let sessions = |state: &str| m.get("facegate_sessions", &[("state", state)]);
    assert_eq!(sessions("VERIFIED"), 3.0);
    assert_eq!(sessions("FAILED"), 1.0);
    assert_eq!(sessions("REQUIRES_INPUT"), 1.0);
    for state in ["AWAITING_USER", "PROCESSING", "EXPIRED", "CANCELED"] {
        assert_eq!(sessions(state), 0.0, "{state}");
    }
    assert_eq!(m.sum("facegate_sessions", &[]), 5.0);

    // Labels carry no session id and no personal data.
    let text = format!("{:?}", m.samples);
    for forbidden in ["ses_", "测试用户", &id_number(1)] {
        assert!(!text.contains(forbidden), "{forbidden} in a label");
    }
    // Every RPC and vendor call was made for the sandbox's anonymous caller, of tenant `default`.
    assert_eq!(
        m.sum("facegate_rpc_requests_total", &[("tenant", "default")]),
        8.0
    );
    let vendor_calls = m.sum("facegate_vendor_requests_total", &[]);
    assert!(vendor_calls > 0.0);
    assert_eq!(
        m.sum("facegate_vendor_requests_total", &[("tenant", "default")]),
        vendor_calls
    );
    assert_eq!(m.sum("facegate_auth_failures_total", &[]), 0.0);
    srv.stop().await;
}
