//! `nats`: each event a NATS message, through async-nats.
//!
//! With `jetstream: true` (the default) each message is published to a
//! JetStream stream and counts as delivered when the stream acknowledged
//! it; a stream must capture the subject. With `jetstream: false` it goes
//! to core NATS, which confirms nothing: a message published while the
//! server is unreachable may be lost (at most once). The client reconnects
//! on its own.
//!
//! CloudEvents NATS binding: `structured` sends the whole event with
//! `content-type: application/cloudevents+json`; `binary` sends `data`
//! with its content type and the attributes as `ce-*` headers.

use std::time::Duration;

use async_nats::HeaderMap;
use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{EncodedBatch, Framing, Mode, STRUCTURED_CONTENT_TYPE};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::{BuildContext, Parts, Unconfirmed};

/// `type: nats`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server, `nats://host:port` (several separated by commas). Required.
    pub url: Spanned<String>,
    /// The subject; may contain fields in braces (`events.{type}`). Required.
    pub subject: Spanned<String>,
    /// Publish to JetStream and wait for its acknowledgement; `false`
    /// publishes to core NATS, at most once. Default: `true`.
    #[serde(default = "yes")]
    pub jetstream: bool,
    /// `structured` or `binary` (see above). Default: `structured`.
    #[serde(default)]
    pub mode: Mode,
}

fn yes() -> bool {
    true
}

pub struct Sink {
    url: String,
    client: tokio::sync::OnceCell<async_nats::Client>,
    /// Why the client could not connect, while it cannot.
    connect_error: std::sync::Arc<std::sync::Mutex<String>>,
    destination: crate::sinks::driver::Destination,
    jetstream: bool,
    mode: Mode,
}

pub fn build(config: &Config, _cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    if !config.url.value.split(',').all(|u| u.trim().starts_with("nats://") || u.trim().starts_with("tls://"))
    {
        return Err(BuildError::at(config.url.pos, "`url` must start with nats:// or tls://"));
    }
    if config.subject.value.is_empty() || config.subject.value.contains(char::is_whitespace) {
        return Err(BuildError::at(config.subject.pos, "`subject` may not be empty or hold spaces"));
    }
    let (destination, partitioner) = crate::sinks::driver::Destination::new(&config.subject, subject_token)?;
    let sink = Sink {
        url: config.url.value.clone(),
        client: tokio::sync::OnceCell::new(),
        connect_error: Default::default(),
        destination,
        jetstream: config.jetstream,
        mode: config.mode,
    };
    let parts = Parts::messages(Framing { mode: config.mode, key: None }, partitioner);
    Ok((sink, parts))
}

/// Keeps a field value inside one subject token: no spaces, dots or wildcards.
fn subject_token(value: &str, out: &mut String) {
    for c in value.chars() {
        out.push(if c.is_whitespace() || c == '.' || c == '*' || c == '>' { '_' } else { c });
    }
}

impl Sink {
    async fn client(&self) -> Result<&async_nats::Client, String> {
        self.client
            .get_or_try_init(|| async {
                // Connects in the background and reconnects by itself; a
                // server that is down at start is not an error.
                let url = crate::util::redact::redact_url(&self.url).into_owned();
                let connect_error = self.connect_error.clone();
                async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    // Said once per change, not at every reconnect attempt.
                    .event_callback(move |event| {
                        let url = url.clone();
                        let connect_error = connect_error.clone();
                        async move {
                            match event {
                                async_nats::Event::Connected => {
                                    connect_error.lock().unwrap_or_else(|e| e.into_inner()).clear();
                                    tracing::info!("connected to NATS at {url}")
                                }
                                // A failed connection attempt, e.g. refused credentials.
                                async_nats::Event::ClientError(e) => {
                                    let e = e.to_string();
                                    let mut last = connect_error.lock().unwrap_or_else(|e| e.into_inner());
                                    if *last != e {
                                        tracing::warn!("cannot connect to NATS at {url}: {e}; retrying");
                                        *last = e;
                                    }
                                }
                                async_nats::Event::Disconnected => {
                                    tracing::warn!("lost the connection to NATS at {url}; reconnecting")
                                }
                                other => tracing::debug!("NATS: {other}"),
                            }
                        }
                    })
                    .connection_timeout(Duration::from_secs(5))
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| format!("cannot connect to NATS: {e}"))
            })
            .await
    }

    fn headers(&self, m: &crate::sinks::driver::batch::Message<'_>) -> HeaderMap {
        let mut h = HeaderMap::new();
        match self.mode {
            Mode::Structured => h.insert("content-type", STRUCTURED_CONTENT_TYPE),
            Mode::Binary => {
                for (k, v) in m.attributes() {
                    if k == "datacontenttype" {
                        h.insert("content-type", v);
                    } else {
                        h.insert(format!("ce-{k}").as_str(), v);
                    }
                }
            }
        }
        h
    }

    pub async fn send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError> {
        // Made once: each message then clones a reference, not the text.
        let subject = async_nats::Subject::from(self.destination.of(batch)?);
        let client = self.client().await.map_err(SendError::retry)?;
        if client.connection_state() != async_nats::connection::State::Connected {
            // Refused credentials are known before anything is published;
            // other connection troubles wait for the publishes' answers.
            let error = self.connect_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let auth @ SendError::Auth(_) = SendError::retry(format!("cannot connect to NATS: {error}")) {
                return Err(auth);
            }
        }
        if !self.jetstream {
            for m in batch.messages() {
                client
                    .publish_with_headers(subject.clone(), self.headers(&m), batch.body.slice_ref(m.value))
                    .await
                    .map_err(|e| SendError::retry(format!("cannot publish to NATS: {e}")))?;
            }
            return client.flush().await.map_err(|e| SendError::retry(format!("cannot reach NATS: {e}")));
        }
        let js = async_nats::jetstream::new(client.clone());
        let mut pending = Vec::with_capacity(batch.events);
        let mut failure = None;
        for (i, m) in batch.messages().enumerate() {
            if batch.is_confirmed(i) {
                continue;
            }
            match js
                .publish_with_headers(subject.clone(), self.headers(&m), batch.body.slice_ref(m.value))
                .await
            {
                Ok(ack) => pending.push((i, ack)),
                Err(e) => {
                    failure = Some(format!("cannot publish: {e}"));
                    break;
                }
            }
        }
        let mut unconfirmed = Unconfirmed::new(&metrics.unconfirmed, pending.len());
        for (i, ack) in pending {
            let result = ack.await;
            unconfirmed.confirmed(1);
            match result {
                Ok(_) => batch.confirm(i),
                Err(e) => {
                    failure.get_or_insert_with(|| e.to_string());
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(reason) => {
                Err(SendError::retry(format!("not acknowledged by JetStream on `{subject}`: {reason}")))
            }
        }
    }

    pub async fn healthcheck(&self, _timeout: std::time::Duration) -> Result<(), String> {
        let client = self.client().await?;
        match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
            Ok(Ok(())) if client.connection_state() == async_nats::connection::State::Connected => Ok(()),
            Ok(Err(e)) => Err(format!("NATS does not answer: {e}")),
            _ => Err(format!("not connected to NATS at {}", crate::util::redact::redact_url(&self.url))),
        }
    }
}
