//! NATS JetStream: stream `SOCIAL_COMMANDS` (work-queue retention, `Nats-Msg-Id` dedup window), a durable
//! pull consumer for the ingester, and stream `SOCIAL_DLQ` for dead letters with their reason in headers.

use crate::delivery::{DeadLetter, Delivery, Handle};
use crate::{CommandSource, DeadLetterQueue, PublishReceipt, QueueError};
use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context, Message};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

/// Names of the streams, subjects and consumer; tests give each run its own.
#[derive(Debug, Clone)]
pub struct QueueNames {
    pub commands_stream: String,
    pub commands_subject: String,
    pub dlq_stream: String,
    pub dlq_subject: String,
    pub consumer: String,
}

impl Default for QueueNames {
    fn default() -> Self {
        Self::with_prefix("SOCIAL", "social")
    }
}

impl QueueNames {
    /// `SOCIAL_COMMANDS`/`social.commands` etc. for prefix (`SOCIAL`, `social`).
    pub fn with_prefix(stream_prefix: &str, subject_prefix: &str) -> Self {
        Self {
            commands_stream: format!("{stream_prefix}_COMMANDS"),
            commands_subject: format!("{subject_prefix}.commands"),
            dlq_stream: format!("{stream_prefix}_DLQ"),
            dlq_subject: format!("{subject_prefix}.dlq"),
            consumer: "ingester".into(),
        }
    }
}

const HDR_REASON: &str = "Socialnet-Error";
/// How long a fetch waits for more messages after the first one.
const FILL_WINDOW: Duration = Duration::from_millis(2);
const HDR_DELIVERIES: &str = "Socialnet-Deliveries";
const HDR_COMMAND: &str = "Socialnet-Command-Id";
/// About one encoded command with its share of a message, for sizing pulls in bytes.
const BYTES_PER_COMMAND: usize = 384;
/// A pull must fit the largest message the server accepts (its `max_payload`, 1 MiB by default, plus
/// headers): a message larger than a pull's byte budget would never be delivered.
const MIN_PULL_BYTES: usize = 2 * 1024 * 1024;

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// One JetStream server (primary or secondary) with the socialnet streams on it.
pub struct JetStreamQueue {
    label: String,
    client: async_nats::Client,
    js: Context,
    names: QueueNames,
    streams_ready: OnceCell<()>,
    messages: Mutex<Option<pull::Stream>>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueue").field("label", &self.label).finish()
    }
}

impl JetStreamQueue {
    /// Connect without waiting for the server: the client keeps retrying in the background, so a service
    /// can start while its secondary (or primary) queue is still down.
    pub async fn connect(
        label: &str,
        url: &str,
        names: QueueNames,
        timeout: Duration,
    ) -> Result<Arc<Self>, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("socialnet-{label}"))
            .retry_on_initial_connect()
            .connection_timeout(timeout)
            .max_reconnects(None)
            .connect(url)
            .await
            .map_err(unavailable)?;
        let js = jetstream::ContextBuilder::new().timeout(timeout).build(client.clone());
        Ok(Arc::new(Self {
            label: label.to_owned(),
            client,
            js,
            names,
            streams_ready: OnceCell::new(),
            messages: Mutex::new(None),
        }))
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    pub fn names(&self) -> &QueueNames {
        &self.names
    }

    /// Create (or adopt) the command and dead-letter streams. Idempotent.
    pub async fn ensure_streams(&self) -> Result<(), QueueError> {
        self.streams_ready
            .get_or_try_init(|| async {
                self.js
                    .get_or_create_stream(stream::Config {
                        name: self.names.commands_stream.clone(),
                        subjects: vec![self.names.commands_subject.clone()],
                        retention: RetentionPolicy::WorkQueue,
                        storage: StorageType::File,
                        duplicate_window: Duration::from_secs(120),
                        ..Default::default()
                    })
                    .await
                    .map_err(unavailable)?;
                let dlq = stream::Config {
                    name: self.names.dlq_stream.clone(),
                    // One subject per command (`<dlq>.<command id>`) so a command's letter is found by id.
                    subjects: vec![format!("{}.>", self.names.dlq_subject)],
                    storage: StorageType::File,
                    ..Default::default()
                };
                let mut existing = self.js.get_or_create_stream(dlq.clone()).await.map_err(unavailable)?;
                let info = existing.info().await.map_err(unavailable)?;
                if info.config.subjects != dlq.subjects {
                    // A stream made by an older version, on the bare subject: widen it (letters stay).
                    let config = stream::Config { subjects: dlq.subjects, ..info.config.clone() };
                    self.js.update_stream(config).await.map_err(unavailable)?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Publish a message under a deduplication id and wait for the stream's ack.
    pub async fn publish_raw(&self, msg_id: &str, payload: Bytes) -> Result<PublishReceipt, QueueError> {
        if !self.is_connected() {
            return Err(QueueError::Unavailable(format!("{} queue is not connected", self.label)));
        }
        self.ensure_streams().await?;
        let ack = self
            .js
            .send_publish(
                self.names.commands_subject.clone(),
                Publish::build().payload(payload).message_id(msg_id),
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(PublishReceipt { queue: self.label.clone(), sequence: ack.sequence, duplicate: ack.duplicate })
    }

    /// The JetStream context, for benchmarks that measure raw publish rates on the same server.
    pub fn context(&self) -> &Context {
        &self.js
    }

    async fn consumer(&self) -> Result<PullConsumer, QueueError> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(&self.names.commands_stream).await.map_err(unavailable)?;
        stream
            .get_or_create_consumer(
                &self.names.consumer,
                pull::Config {
                    durable_name: Some(self.names.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    // Short enough that a crashed ingester's batch comes back soon; batches take well under a second.
                    ack_wait: Duration::from_secs(10),
                    max_ack_pending: 20_000,
                    // The ingester counts deliveries itself and dead-letters with a reason; the server must
                    // not silently stop redelivering first.
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn publish_dead_letter(
        &self,
        payload: Bytes,
        msg_id: Option<&str>,
        delivered: u64,
        reason: &str,
    ) -> Result<(), QueueError> {
        let mut publish = Publish::build()
            .payload(payload)
            .header(HDR_REASON, reason.replace(['\r', '\n'], " "))
            .header(HDR_DELIVERIES, delivered.to_string());
        if let Some(id) = msg_id {
            publish = publish.header(HDR_COMMAND, id);
        }
        self.js
            .send_publish(self.dlq_subject_of(msg_id.unwrap_or("unknown")), publish)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The subject a command's dead letter is filed under; characters a subject token cannot hold become `_`.
    fn dlq_subject_of(&self, command_id: &str) -> String {
        let token: String = command_id
            .chars()
            .map(|c| if c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>') { c } else { '_' })
            .collect();
        format!("{}.{token}", self.names.dlq_subject)
    }

    async fn dlq_stream(&self) -> Result<stream::Stream, QueueError> {
        self.ensure_streams().await?;
        self.js.get_stream(&self.names.dlq_stream).await.map_err(unavailable)
    }
}

/// Pull from one server. Wraps the queue in an `Arc` so deliveries can reach back for dead-lettering.
#[derive(Debug, Clone)]
pub struct JetStreamSource(pub Arc<JetStreamQueue>);

#[async_trait]
impl CommandSource for JetStreamSource {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let queue = &self.0;
        let mut guard = queue.messages.lock().await;
        if guard.is_none() {
            let consumer = queue.consumer().await?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(max.max(1))
                // Also bounded in bytes, so that messages carrying many commands do not buffer more
                // work than the ingester finishes within the ack wait (a redelivery storm otherwise).
                .max_bytes_per_batch((max * BYTES_PER_COMMAND).max(MIN_PULL_BYTES))
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(unavailable)?;
            *guard = Some(messages);
        }
        let Some(messages) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // `max` counts commands; a message may carry several (group commit).
        let mut commands = 0;
        let first = match tokio::time::timeout(wait, messages.next()).await {
            Err(_) => return Ok(out),
            Ok(None) => {
                *guard = None;
                return Ok(out);
            }
            Ok(Some(Err(e))) => {
                // Heartbeats missed or the connection dropped: start a fresh pull next time.
                *guard = None;
                return Err(unavailable(e));
            }
            Ok(Some(Ok(m))) => m,
        };
        commands += crate::command_count(&first.payload);
        out.push(wrap(queue, first));
        // Fill the batch with what arrives within a couple of milliseconds: bigger batches mean fewer
        // store round trips per command, and the wait is small next to a commit.
        let fill_until = tokio::time::Instant::now() + FILL_WINDOW;
        while commands < max {
            let next = match messages.next().now_or_never() {
                Some(n) => n,
                None => match tokio::time::timeout_at(fill_until, messages.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
            };
            match next {
                Some(Ok(m)) => {
                    commands += crate::command_count(&m.payload);
                    out.push(wrap(queue, m));
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn name(&self) -> &str {
        self.0.label()
    }
}

fn wrap(queue: &Arc<JetStreamQueue>, message: Message) -> Delivery {
    let delivered = message.info().map(|i| u64::try_from(i.delivered).unwrap_or(1)).unwrap_or(1);
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    Delivery {
        payload: message.payload.clone(),
        msg_id,
        delivered,
        handle: Handle::JetStream { message: Box::new(message), queue: queue.clone() },
    }
}

#[async_trait]
impl DeadLetterQueue for JetStreamQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut stream = self.dlq_stream().await?;
        let info = stream.info().await.map_err(unavailable)?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return Ok(out);
        }
        for seq in first..=last {
            if out.len() >= limit {
                break;
            }
            // Deleted (requeued) sequences leave holes; skip them.
            let Ok(msg) = stream.get_raw_message(seq).await else {
                continue;
            };
            out.push(letter(seq, &msg));
        }
        Ok(out)
    }

    async fn requeue(&self, sequence: u64) -> Result<bool, QueueError> {
        let stream = self.dlq_stream().await?;
        let Ok(msg) = stream.get_raw_message(sequence).await else {
            return Ok(false);
        };
        let command_id = msg.headers.get(HDR_COMMAND).map(|v| v.as_str().to_owned()).unwrap_or_default();
        // A fresh message id: the original may still be inside the dedup window. The event store's
        // command-id uniqueness still makes a double requeue harmless.
        self.publish_raw(&format!("{command_id}/requeue/{sequence}"), msg.payload.clone()).await?;
        stream.delete_message(sequence).await.map_err(unavailable)?;
        Ok(true)
    }

    async fn find(&self, command_id: &str) -> Result<Option<DeadLetter>, QueueError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let stream = self.dlq_stream().await?;
        match stream.get_last_raw_message_by_subject(&self.dlq_subject_of(command_id)).await {
            Ok(msg) => Ok(Some(letter(msg.sequence, &msg))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn purge(&self) -> Result<u64, QueueError> {
        let stream = self.dlq_stream().await?;
        let done = stream.purge().await.map_err(unavailable)?;
        Ok(done.purged)
    }
}

fn letter(sequence: u64, msg: &async_nats::jetstream::message::StreamMessage) -> DeadLetter {
    let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
    DeadLetter {
        sequence,
        command_id: header(HDR_COMMAND),
        reason: header(HDR_REASON).unwrap_or_default(),
        deliveries: header(HDR_DELIVERIES).and_then(|d| d.parse().ok()).unwrap_or(0),
        payload: String::from_utf8_lossy(&msg.payload).into_owned(),
    }
}
