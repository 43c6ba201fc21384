//! `http`: batches POSTed to an HTTP endpoint, or, with the single-event
//! encodings of the CloudEvents HTTP binding (`structured`, `binary`), each
//! event as a request of its own (`single`).
//!
//! 2xx is delivered; 408, 429 and 5xx (and a connection that fails or does
//! not answer) are retried, after `Retry-After` when the server sends one;
//! 401, 403 and 407 refuse the agent's credentials, not the batch, and are
//! retried until they are fixed; any other answer means the batch will never
//! be accepted, and it goes to the dead-letter directory. Redirects are not followed: a POST that is
//! redirected is a configuration mistake to see, not to paper over.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

mod single;

use crate::config::{BuildError, Spanned};
use crate::event::encode::Codec;
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{BatchLimits, Compression, EncodedBatch, Framing, Mode};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::{BuildContext, Parts};

/// `type: http`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to POST batches: an `http://` or `https://` URL. Required.
    pub url: Spanned<String>,
    /// `ndjson` (one CloudEvent a line), `json` (a JSON array of CloudEvents)
    /// or `cloudevents_batch` (the same array, as
    /// `application/cloudevents-batch+json`); or one event per request as the
    /// CloudEvents HTTP binding has it: `structured` (the event as
    /// `application/cloudevents+json`) or `binary` (`ce-*` headers, the data
    /// as the body with its `datacontenttype` as `Content-Type`). Default:
    /// `ndjson`.
    #[serde(default)]
    pub encoding: Encoding,
    /// `none`, `gzip` or `zstd`, sent as `Content-Encoding`. Default: `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Extra headers on every request. Default: none.
    #[serde(default)]
    pub headers: Spanned<IndexMap<String, String>>,
    /// `{basic: {user, password}}` or `{bearer: TOKEN}`. Default: none.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS settings for `https://` URLs. Default: the system's CA certificates.
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Ndjson,
    Json,
    CloudeventsBatch,
    Structured,
    Binary,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// `tls:` on an http sink.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates trusted in addition to the system's.
    /// Default: the system's only.
    #[serde(default)]
    pub ca_file: Option<Spanned<PathBuf>>,
}

pub struct Sink {
    /// Made on the first request: loading the system's CA certificates costs
    /// more CPU than an idle agent spends in a minute, so it waits for traffic.
    client: tokio::sync::OnceCell<reqwest::Client>,
    extra_roots: Vec<reqwest::Certificate>,
    url: reqwest::Url,
    headers: HeaderMap,
    /// Set for the single-event encodings.
    single: Option<Mode>,
}

pub fn build(config: &Config, _cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    let url = reqwest::Url::parse(&config.url.value).map_err(|e| {
        let shown = crate::util::redact::redact_url(&config.url.value);
        BuildError::at(config.url.pos, format!("invalid url {shown:?}: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BuildError::at(config.url.pos, "`url` must start with http:// or https://"));
    }

    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers.value {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BuildError::at(config.headers.pos, format!("invalid header name {name:?}")))?;
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| BuildError::at(config.headers.pos, format!("invalid value for header {name:?}")))?;
        if n == AUTHORIZATION {
            v.set_sensitive(true);
        }
        if n == CONTENT_TYPE || n == CONTENT_ENCODING {
            let msg = format!("`{name}` is set from `encoding` and `compression`");
            return Err(BuildError::at(config.headers.pos, msg));
        }
        headers.insert(n, v);
    }
    if let Some(auth) = &config.auth {
        if headers.contains_key(AUTHORIZATION) {
            let msg = "`auth` and an `Authorization` header both set the same header; keep one";
            return Err(BuildError::at(config.headers.pos, msg));
        }
        use base64::Engine as _;
        let value = match auth {
            Auth::Basic { user, password } => {
                let raw = format!("{user}:{password}");
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
            }
            Auth::Bearer(token) => format!("Bearer {token}"),
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| BuildError::new("`auth` holds characters a header cannot"))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }

    let mut extra_roots = Vec::new();
    if let Some(ca) = &config.tls.ca_file {
        let pem = std::fs::read(&ca.value)
            .map_err(|e| BuildError::at(ca.pos, format!("cannot read {}: {e}", ca.value.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            BuildError::at(ca.pos, format!("{} is not a PEM certificate file: {e}", ca.value.display()))
        })?;
        if certs.is_empty() {
            return Err(BuildError::at(ca.pos, format!("{} holds no certificate", ca.value.display())));
        }
        extra_roots = certs;
    }

    let (codec, single) = match config.encoding {
        Encoding::Ndjson => (Codec::Ndjson, None),
        Encoding::Json => (Codec::Json, None),
        Encoding::CloudeventsBatch => (Codec::CloudeventsBatch, None),
        Encoding::Structured => (Codec::Ndjson, Some(Mode::Structured)),
        Encoding::Binary => (Codec::Ndjson, Some(Mode::Binary)),
    };
    let parts = match single {
        None => Parts {
            codec,
            compression: config.compression,
            batch: BatchLimits::DEFAULT,
            concurrency: 4,
            max_concurrency: 1024,
            partitioner: None,
            framing: None,
        },
        // One request per event: each batch sends its events one after the
        // other, and `concurrency` batches are sent at once, so that many
        // requests are in flight. Batches are smaller than with the batch
        // encodings: a batch is acknowledged when its last event is
        // delivered, and what the batches in flight hold stays small.
        Some(mode) => Parts {
            codec,
            compression: config.compression,
            batch: BatchLimits { max_events: 100, ..BatchLimits::DEFAULT },
            concurrency: 32,
            max_concurrency: 1024,
            partitioner: None,
            framing: Some(Framing { mode, key: None }),
        },
    };
    let sink = Sink { client: tokio::sync::OnceCell::new(), extra_roots, url, headers, single };
    Ok((sink, parts))
}

impl Sink {
    /// Whether the endpoint accepts a TCP connection (`validate --connect`,
    /// `run --dry-run`). No request is sent: an endpoint may answer nothing
    /// but its POSTs, and a test request would be traffic of its own.
    pub async fn healthcheck(&self, timeout: std::time::Duration) -> Result<(), String> {
        let host = self.url.host_str().ok_or("the url has no host")?;
        let port = self.url.port_or_known_default().ok_or("the url has no port")?;
        // `host_str` keeps the brackets of an IPv6 address, so this parses.
        let address = format!("{host}:{port}");
        // Bounded: the sink's driver waits for this before its first batch,
        // and a host that drops packets would hold it for minutes.
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot connect to {address}: {e}")),
            Err(_) => {
                Err(format!("no connection to {address} within {}", humantime::format_duration(timeout)))
            }
        }
    }

    async fn client(&self) -> Result<&reqwest::Client, SendError> {
        self.client
            .get_or_try_init(|| async {
                crate::util::tls::install_crypto_provider();
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("hostwatch/", env!("CARGO_PKG_VERSION")))
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(10))
                    .pool_idle_timeout(Duration::from_secs(60))
                    .tls_certs_merge(self.extra_roots.iter().cloned())
                    .build()
            })
            .await
            .map_err(|e| SendError::retry(format!("cannot set up the HTTP client: {}", error_chain(&e))))
    }

    pub async fn send(&self, batch: &EncodedBatch, _metrics: &ComponentMetrics) -> Result<(), SendError> {
        if let Some(mode) = self.single {
            return single::send(self, mode, batch).await;
        }
        let mut request = self
            .client()
            .await?
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, batch.content_type)
            .body(batch.body.clone());
        if let Some(encoding) = batch.content_encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        self.execute(request).await
    }

    /// Sends one request and classifies its answer.
    async fn execute(&self, request: reqwest::RequestBuilder) -> Result<(), SendError> {
        let response = request
            .send()
            .await
            .map_err(|e| SendError::retry(format!("POST {} failed: {}", self.url, error_chain(&e))))?;
        let status = response.status();
        if status.is_success() {
            // Read the body so the connection goes back to the pool.
            let _ = response.bytes().await;
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string();
        let reason = if text.is_empty() {
            format!("{} answered {status}", self.url)
        } else {
            format!("{} answered {status}: {text}", self.url)
        };
        if matches!(status.as_u16(), 401 | 403 | 407) {
            Err(SendError::Auth(format!(
                "the endpoint refused the agent's credentials ({}): check the sink's auth/headers; {reason}",
                status.as_u16()
            )))
        } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Retry { after: retry_after, reason })
        } else {
            Err(SendError::Permanent(reason))
        }
    }
}

/// `Retry-After`: a number of seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// An error with its causes: reqwest's own message alone says too little
/// ("error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(d > Duration::from_secs(55) && d <= Duration::from_secs(60));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
