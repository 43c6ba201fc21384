//! `mqtt`: each event an MQTT message (3.1.1), through rumqttc.
//!
//! Messages are published with QoS 1 and an event counts as delivered when
//! the broker's PUBACK for it came back. The session is persistent (clean
//! session off, a stable client id): after a reconnect the client sends the
//! messages not yet acknowledged again, and the broker keeps what was
//! queued for persistent subscribers while they were away.
//!
//! MQTT 3.1.1 has no message headers, so the CloudEvents MQTT binding allows
//! only the structured mode: the whole event is the payload.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::config::{BuildError, Spanned};
use crate::pipeline::metrics::ComponentMetrics;
use crate::sinks::driver::batch::{EncodedBatch, Framing, Mode};
use crate::sinks::driver::retry::SendError;
use crate::sinks::driver::{BuildContext, Parts, Unconfirmed};

/// `type: mqtt`
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker, `mqtt://[user:password@]host:port`. Required.
    pub url: Spanned<String>,
    /// The topic; may contain fields in braces (`hostwatch/{host}/{type}`).
    /// Required.
    pub topic: Spanned<String>,
    /// Ask the broker to keep the last message of each topic for new
    /// subscribers. Default: `false`.
    #[serde(default)]
    pub retain: bool,
    /// The client id, which names the persistent session. Default:
    /// `hostwatch-<host name>-<sink id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Seconds between keep-alive pings. Default: `30s`.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: crate::config::Duration,
}

fn default_keep_alive() -> crate::config::Duration {
    crate::config::Duration::from_secs(30)
}

/// Who waits for which publish: publishes are numbered by the event loop
/// in the order they were requested.
#[derive(Default)]
struct Waiters {
    /// Requested, not yet given a packet id.
    queued: VecDeque<oneshot::Sender<()>>,
    /// Sent, waiting for their PUBACK.
    inflight: HashMap<u16, oneshot::Sender<()>>,
    /// Given an id still in flight (the broker acknowledged out of order):
    /// sent once that one is acknowledged.
    collided: HashMap<u16, oneshot::Sender<()>>,
}

pub struct Sink {
    options: MqttOptions,
    destination: crate::sinks::driver::Destination,
    retain: bool,
    client: tokio::sync::OnceCell<AsyncClient>,
    waiters: Arc<Mutex<Waiters>>,
    /// Whether the event loop is connected, for the health check.
    connected: Arc<std::sync::atomic::AtomicBool>,
    /// Why the event loop could not connect, while it cannot.
    connect_error: Arc<Mutex<String>>,
    /// Publishes happen one batch at a time, so that packet ids and waiters
    /// stay in the same order.
    publishing: tokio::sync::Mutex<()>,
}

pub fn build(config: &Config, cx: &BuildContext) -> Result<(Sink, Parts), BuildError> {
    let url = reqwest::Url::parse(&config.url.value)
        .map_err(|e| BuildError::at(config.url.pos, format!("invalid url: {e}")))?;
    if url.scheme() != "mqtt" {
        return Err(BuildError::at(config.url.pos, "`url` must start with mqtt://"));
    }
    let host = url.host_str().ok_or_else(|| BuildError::at(config.url.pos, "`url` has no host"))?;
    let client_id = config.client_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("hostwatch-{}-{}", host.trim(), cx.id)
    });
    let mut options = MqttOptions::new(client_id, host, url.port().unwrap_or(1883));
    options
        .set_clean_session(false)
        .set_keep_alive(config.keep_alive.0.max(Duration::from_secs(5)))
        .set_max_packet_size(1 << 20, 256 << 20)
        .set_inflight(1000);
    if !url.username().is_empty() {
        let user = percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy().into_owned();
        let pass = percent_encoding::percent_decode_str(url.password().unwrap_or(""))
            .decode_utf8_lossy()
            .into_owned();
        options.set_credentials(user, pass);
    }
    if config.topic.value.is_empty() || config.topic.value.contains(['+', '#']) {
        return Err(BuildError::at(
            config.topic.pos,
            "`topic` may not be empty or hold the wildcards + and #",
        ));
    }
    let (destination, partitioner) = crate::sinks::driver::Destination::new(&config.topic, topic_level)?;
    let sink = Sink {
        options,
        destination,
        retain: config.retain,
        client: tokio::sync::OnceCell::new(),
        waiters: Default::default(),
        connected: Default::default(),
        connect_error: Default::default(),
        publishing: tokio::sync::Mutex::new(()),
    };
    // One batch in flight: the one client publishes a batch at a time
    // anyway (`publishing`).
    let parts = Parts {
        concurrency: 1,
        max_concurrency: 1,
        ..Parts::messages(Framing { mode: Mode::Structured, key: None }, partitioner)
    };
    Ok((sink, parts))
}

/// Keeps a field value inside one topic level: `/`, `+` and `#` become `_`.
fn topic_level(value: &str, out: &mut String) {
    for c in value.chars() {
        out.push(if c == '/' || c == '+' || c == '#' { '_' } else { c });
    }
}

impl Sink {
    /// The client, and its event loop running in a task of its own.
    async fn client(&self) -> &AsyncClient {
        self.client
            .get_or_init(|| async {
                let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 1000);
                let waiters = self.waiters.clone();
                let connected = self.connected.clone();
                let connect_error = self.connect_error.clone();
                tokio::spawn(async move {
                    let mut last_error = String::new();
                    loop {
                        match eventloop.poll().await {
                            Ok(event) => {
                                if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                                    connected.store(true, std::sync::atomic::Ordering::Relaxed);
                                    connect_error.lock().unwrap_or_else(|e| e.into_inner()).clear();
                                    if !last_error.is_empty() {
                                        tracing::info!("MQTT broker reachable again");
                                        last_error.clear();
                                    }
                                }
                                on_event(&waiters, event);
                            }
                            Err(e) => {
                                connected.store(false, std::sync::atomic::Ordering::Relaxed);
                                let e = e.to_string();
                                connect_error.lock().unwrap_or_else(|e| e.into_inner()).clone_from(&e);
                                if e != last_error {
                                    tracing::warn!("MQTT connection: {e}; reconnecting");
                                    last_error = e;
                                }
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                });
                client
            })
            .await
    }

    pub async fn send(&self, batch: &EncodedBatch, metrics: &ComponentMetrics) -> Result<(), SendError> {
        let topic = self.destination.of(batch)?;
        let client = self.client().await;
        if !self.connected.load(std::sync::atomic::Ordering::Relaxed) {
            // Refused credentials are known before anything is published;
            // other connection troubles wait for the publishes' answers.
            let error = self.connect_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let auth @ SendError::Auth(_) = SendError::retry(format!("cannot connect to MQTT: {error}")) {
                return Err(auth);
            }
        }
        let mut pending = Vec::with_capacity(batch.events);
        {
            let _order = self.publishing.lock().await;
            for (i, m) in batch.messages().enumerate() {
                if batch.is_confirmed(i) {
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                self.waiters.lock().unwrap_or_else(|e| e.into_inner()).queued.push_back(tx);
                if let Err(e) = client
                    .publish_bytes(topic, QoS::AtLeastOnce, self.retain, batch.body.slice_ref(m.value))
                    .await
                {
                    self.waiters.lock().unwrap_or_else(|e| e.into_inner()).queued.pop_back();
                    return Err(SendError::retry(format!("cannot publish to MQTT: {e}")));
                }
                pending.push((i, rx));
            }
        }
        let mut unconfirmed = Unconfirmed::new(&metrics.unconfirmed, pending.len());
        let mut all = true;
        for (i, rx) in pending {
            let acked = rx.await.is_ok();
            unconfirmed.confirmed(1);
            if acked {
                batch.confirm(i);
            } else {
                all = false;
            }
        }
        if all { Ok(()) } else { Err(SendError::retry("not acknowledged by the MQTT broker")) }
    }

    pub async fn healthcheck(&self, _timeout: std::time::Duration) -> Result<(), String> {
        let _ = self.client().await;
        for _ in 0..50 {
            if self.connected.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "not connected to the MQTT broker at {}:{}",
            self.options.broker_address().0,
            self.options.broker_address().1
        ))
    }
}

/// Matches the event loop's packet ids to the publishes waiting for them.
fn on_event(waiters: &Mutex<Waiters>, event: Event) {
    let mut w = waiters.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        Event::Outgoing(Outgoing::Publish(pkid)) => {
            if let Some(tx) = w.collided.remove(&pkid) {
                w.inflight.insert(pkid, tx);
            } else if !w.inflight.contains_key(&pkid) {
                // A new publish; one already in flight is being sent again
                // after a reconnect.
                if let Some(tx) = w.queued.pop_front() {
                    w.inflight.insert(pkid, tx);
                }
            }
        }
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
            if let Some(tx) = w.queued.pop_front() {
                w.collided.insert(pkid, tx);
            }
        }
        Event::Incoming(Packet::PubAck(ack)) => {
            if let Some(tx) = w.inflight.remove(&ack.pkid) {
                let _ = tx.send(());
            }
        }
        _ => {}
    }
}
