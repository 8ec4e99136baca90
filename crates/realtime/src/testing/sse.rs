//! A Server-Sent Events client, for tests.
#![allow(missing_docs, clippy::missing_panics_doc)]

use futures_util::StreamExt;
use serde_json::Value;

/// One SSE record.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

pub struct Stream {
    inner: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buf: String,
    pub status: u16,
}

pub fn query(page: &Value, cursor: Option<&Value>) -> String {
    let mut q: Vec<(String, String)> = vec![(
        "usertoken".into(),
        page["usertoken"].as_str().expect("ut").into(),
    )];
    for s in page["subscriptions"].as_array().expect("subs") {
        q.push((
            "channel".into(),
            s["channel"].as_str().expect("hash").into(),
        ));
        q.push(("token".into(), s["token"].as_str().expect("token").into()));
    }
    if let Some(c) = cursor {
        q.push(("cursor".into(), c.as_str().expect("cursor").into()));
    }
    serde_urlencoded::to_string(q).expect("query")
}

pub async fn open(base: &str, query: &str, last_event_id: Option<&str>) -> Stream {
    let mut req = reqwest::Client::new()
        .get(format!("{base}/sse?{query}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = req.send().await.expect("sse request");
    let status = res.status().as_u16();
    Stream {
        inner: Box::pin(res.bytes_stream()),
        buf: String::new(),
        status,
    }
}

impl Stream {
    /// The next record (comments skipped), or None when the stream ends.
    pub async fn record(&mut self) -> Option<Record> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut r = Record::default();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        r.id = Some(v.into());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        r.event = Some(v.into());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        r.data.push_str(v);
                        any = true;
                    }
                }
                if any && (r.id.is_some() || !r.data.is_empty()) {
                    return Some(r);
                }
                continue;
            }
            match tokio::time::timeout(std::time::Duration::from_secs(10), self.inner.next()).await
            {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Reads until `n` events; returns (events, last id).
    pub async fn events(&mut self, n: usize) -> (Vec<Value>, String) {
        let mut out = Vec::new();
        let mut last = String::new();
        while out.len() < n {
            let r = self.record().await.expect("the stream goes on");
            if r.event.is_none() {
                last = r.id.clone().expect("an id");
                out.push(serde_json::from_str(&r.data).expect("event JSON"));
            }
        }
        (out, last)
    }
}
