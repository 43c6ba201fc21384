//! The single-event encodings of the CloudEvents HTTP protocol binding:
//! each event of a batch is a POST of its own. `structured`: the event's
//! JSON as `application/cloudevents+json`. `binary`: the attributes as
//! `ce-<name>` headers (values percent-encoded as the binding says), the
//! data as the body, `datacontenttype` as `Content-Type`.
//!
//! The events of a batch go one after the other; the driver sends several
//! batches at once. An event delivered is marked in the batch, so a retry
//! sends only those that were not; the batch is delivered when all are.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::Sink;
use crate::sinks::driver::batch::{EncodedBatch, Message, Mode, STRUCTURED_CONTENT_TYPE};
use crate::sinks::driver::retry::SendError;

/// What a header value must not hold as is (binding, 3.1.3.2): space,
/// double quote, percent, and anything outside printable ASCII (non-ASCII
/// is always encoded).
const ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// Sends the events of `batch` not yet delivered, one request each.
pub(super) async fn send(sink: &Sink, mode: Mode, batch: &EncodedBatch) -> Result<(), SendError> {
    let client = sink.client().await?;
    let mut refused = 0usize;
    let mut first_refusal = None;
    for (i, m) in batch.messages().enumerate() {
        if batch.is_confirmed(i) {
            continue;
        }
        let mut headers = sink.headers.clone();
        match mode {
            Mode::Structured => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(STRUCTURED_CONTENT_TYPE));
            }
            Mode::Binary => {
                if let Err(reason) = binary_headers(&m, &mut headers) {
                    refused += 1;
                    first_refusal.get_or_insert(reason);
                    continue;
                }
            }
        }
        if let Some(encoding) = batch.content_encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        // A view of the batch's body: no copy.
        let body = batch.body.slice_ref(m.value);
        let request = client.post(sink.url.clone()).headers(headers).body(body);
        match sink.execute(request).await {
            Ok(()) => batch.confirm(i),
            Err(SendError::Permanent(reason)) => {
                refused += 1;
                first_refusal.get_or_insert(reason);
            }
            // The rest waits for the retry, which starts from here.
            Err(retry) => return Err(retry),
        }
    }
    match first_refusal {
        None => Ok(()),
        Some(reason) => Err(SendError::Permanent(format!(
            "{refused} of {} events refused; the first: {reason}",
            batch.events
        ))),
    }
}

/// The binary-mode headers of one event.
fn binary_headers(m: &Message<'_>, headers: &mut HeaderMap) -> Result<(), String> {
    for (name, value) in m.attributes() {
        if name == "datacontenttype" {
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("`datacontenttype` {value:?} cannot be a Content-Type header"))?;
            headers.insert(CONTENT_TYPE, v);
            continue;
        }
        let encoded: std::borrow::Cow<'_, str> = utf8_percent_encode(value, ENCODE).into();
        let v = HeaderValue::from_str(&encoded)
            .map_err(|_| format!("attribute `{name}` cannot be a header value"))?;
        headers.insert(header_name(name)?, v);
    }
    Ok(())
}

/// `ce-<name>`; the attributes every event has need no allocation.
fn header_name(attribute: &str) -> Result<HeaderName, String> {
    Ok(match attribute {
        "specversion" => HeaderName::from_static("ce-specversion"),
        "id" => HeaderName::from_static("ce-id"),
        "source" => HeaderName::from_static("ce-source"),
        "type" => HeaderName::from_static("ce-type"),
        "time" => HeaderName::from_static("ce-time"),
        "subject" => HeaderName::from_static("ce-subject"),
        "host" => HeaderName::from_static("ce-host"),
        other => HeaderName::from_bytes(format!("ce-{other}").as_bytes())
            .map_err(|_| format!("attribute `{other}` cannot be a header name"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_as_the_binding_says() {
        let enc = |s: &str| utf8_percent_encode(s, ENCODE).to_string();
        assert_eq!(enc("hostwatch://web-01/app_logs"), "hostwatch://web-01/app_logs");
        assert_eq!(enc("a b\"c%d"), "a%20b%22c%25d");
        assert_eq!(enc("€uro\n"), "%E2%82%ACuro%0A");
        assert_eq!(header_name("traceparent").unwrap(), "ce-traceparent");
        assert!(header_name("bad name").is_err());
    }
}
