//! A recording HTTP endpoint for wire tests: an independent vendor fake (not facegate's simulator) keeps every
//! request it received, exactly as it arrived.

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::http::{HeaderMap, Method, Uri};
use axum::Router;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Seen {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A field of a form-encoded body.
    pub fn field(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// Every request received, in order.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Seen>>);

impl Recorder {
    /// Keeps a request and returns it.
    pub fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Seen {
        let seen = Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            body: body.to_vec(),
        };
        self.0.lock().unwrap().push(seen.clone());
        seen
    }

    /// What was received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// Serves `app` on a free loopback port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
