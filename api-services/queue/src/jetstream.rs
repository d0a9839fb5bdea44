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
    /// Command partitions: a command goes to partition hash(issuer) mod this, each partition has a
    /// durable consumer of its own, so several ingesters consume at once while one issuer's commands stay
    /// in one ordered partition. 1 keeps the single subject and consumer.
    pub partitions: u16,
    /// Copies of each stream on a JetStream cluster (1, or 3 on a 3-node cluster: R3).
    pub replicas: usize,
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
            partitions: 1,
            replicas: 1,
        }
    }

    /// The same names with `partitions` partitions and `replicas` copies of each stream.
    pub fn scaled(self, partitions: u16, replicas: usize) -> Self {
        Self { partitions: partitions.max(1), replicas: replicas.max(1), ..self }
    }

    /// The partition of an issuer's commands.
    pub fn partition_of(&self, actor: &domain::UserId) -> u16 {
        let hash = actor
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        u16::try_from(hash % u64::from(self.partitions.max(1))).unwrap_or(0)
    }

    /// The subject commands of `partition` are published on.
    pub fn command_subject(&self, partition: u16) -> String {
        if self.partitions <= 1 {
            self.commands_subject.clone()
        } else {
            format!("{}.{partition}", self.commands_subject)
        }
    }

    /// The durable consumer of `partition` and the subject it is bound to (none: the whole stream).
    fn consumer_of(&self, partition: u16) -> (String, Option<String>) {
        if self.partitions <= 1 {
            (self.consumer.clone(), None)
        } else {
            (format!("{}-p{partition}", self.consumer), Some(self.command_subject(partition)))
        }
    }

    /// The partitions ingester `index` of `count` consumes: every `count`-th, from `index`.
    pub fn owned_partitions(&self, index: u16, count: u16) -> Vec<u16> {
        (0..self.partitions.max(1)).filter(|p| p % count.max(1) == index % count.max(1)).collect()
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
        // Several seeds (`nats://a:4222,nats://b:4222`) for a cluster: the client also learns the others
        // from the servers and reconnects to any of them.
        let seeds = url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueueError::Unavailable(format!("queue URL {url:?}: {e}")))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("socialnet-{label}"))
            .retry_on_initial_connect()
            .connection_timeout(timeout)
            .max_reconnects(None)
            .connect(seeds)
            .await
            .map_err(unavailable)?;
        let js = jetstream::ContextBuilder::new().timeout(timeout).build(client.clone());
        Ok(Arc::new(Self { label: label.to_owned(), client, js, names, streams_ready: OnceCell::new() }))
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
                let base = &self.names.commands_subject;
                let commands = stream::Config {
                    name: self.names.commands_stream.clone(),
                    // The bare subject (one partition) and one subject per partition.
                    subjects: vec![base.clone(), format!("{base}.*")],
                    retention: RetentionPolicy::WorkQueue,
                    storage: StorageType::File,
                    duplicate_window: Duration::from_secs(120),
                    num_replicas: self.names.replicas,
                    ..Default::default()
                };
                self.adopt(commands).await?;
                self.adopt(stream::Config {
                    name: self.names.dlq_stream.clone(),
                    // One subject per command (`<dlq>.<command id>`) so a command's letter is found by id.
                    subjects: vec![format!("{}.>", self.names.dlq_subject)],
                    storage: StorageType::File,
                    num_replicas: self.names.replicas,
                    ..Default::default()
                })
                .await
            })
            .await
            .map(|_| ())
    }

    /// Create a stream, or bring one an older version (or smaller setting) made to these subjects and
    /// replicas; its messages stay.
    async fn adopt(&self, wanted: stream::Config) -> Result<(), QueueError> {
        let mut existing = self.js.get_or_create_stream(wanted.clone()).await.map_err(unavailable)?;
        let info = existing.info().await.map_err(unavailable)?;
        if info.config.subjects != wanted.subjects || info.config.num_replicas != wanted.num_replicas {
            let config = stream::Config {
                subjects: wanted.subjects,
                num_replicas: wanted.num_replicas,
                ..info.config.clone()
            };
            self.js.update_stream(config).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// Publish a message under a deduplication id (on partition 0) and wait for the stream's ack.
    pub async fn publish_raw(&self, msg_id: &str, payload: Bytes) -> Result<PublishReceipt, QueueError> {
        self.publish_to(0, msg_id, payload).await
    }

    /// Publish a message to a partition under a deduplication id and wait for the stream's ack.
    pub async fn publish_to(
        &self,
        partition: u16,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<PublishReceipt, QueueError> {
        if !self.is_connected() {
            return Err(QueueError::Unavailable(format!("{} queue is not connected", self.label)));
        }
        self.ensure_streams().await?;
        let ack = self
            .js
            .send_publish(
                self.names.command_subject(partition),
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

    /// The partition's durable consumer, for a fresh pull. A pull that broke (a node died, the connection
    /// dropped, an ingester crashed) can leave messages delivered but never received: the server would
    /// send them again only after the ack wait, behind the messages that follow them, and one issuer's
    /// commands would be stored out of order. So a fresh pull that finds messages pending starts the
    /// consumer again from the first unacknowledged message; what was in fact committed comes again and
    /// is recognised as recorded.
    async fn consumer(&self, partition: u16) -> Result<PullConsumer, QueueError> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        self.ensure_streams().await?;
        let stream = self.js.get_stream(&self.names.commands_stream).await.map_err(unavailable)?;
        let (name, filter) = self.names.consumer_of(partition);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: filter.unwrap_or_default(),
            num_replicas: self.names.replicas,
            ack_policy: AckPolicy::Explicit,
            // Short enough that a crashed ingester's batch comes back soon; batches take well under a second.
            ack_wait: Duration::from_secs(10),
            max_ack_pending: 20_000,
            // The ingester counts deliveries itself and dead-letters with a reason; the server must
            // not silently stop redelivering first.
            max_deliver: -1,
            ..Default::default()
        };
        if let Ok(info) = stream.consumer_info(&name).await
            && info.num_ack_pending > 0
        {
            let start_sequence = info.ack_floor.stream_sequence + 1;
            tracing::info!(consumer = %name, pending = info.num_ack_pending, start_sequence, "restarting the consumer at its first unacknowledged message");
            stream.delete_consumer(&name).await.map_err(unavailable)?;
            let config =
                pull::Config { deliver_policy: DeliverPolicy::ByStartSequence { start_sequence }, ..config };
            return stream.create_consumer(config).await.map_err(unavailable);
        }
        stream.get_or_create_consumer(&name, config).await.map_err(unavailable)
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

/// Pull one partition from one server. Holds the queue so deliveries can reach back for dead-lettering.
pub struct JetStreamSource {
    queue: Arc<JetStreamQueue>,
    partition: u16,
    label: String,
    messages: Mutex<Option<Pull>>,
}

/// A pull in progress and the consumer sequence of the last message it delivered.
struct Pull {
    stream: pull::Stream,
    last: Option<u64>,
}

/// Whether `message` follows the previous delivery without a gap; records it. A gap means deliveries were
/// lost on the way (a node died with them): the ones after it must not be processed first.
fn in_sequence(last: &mut Option<u64>, message: &Message) -> bool {
    let Ok(info) = message.info() else { return true };
    let ok = last.is_none_or(|l| info.consumer_sequence == l + 1);
    *last = Some(info.consumer_sequence);
    ok
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource").field("label", &self.label).finish()
    }
}

impl JetStreamSource {
    /// The whole queue (one partition) or its partition 0.
    pub fn new(queue: Arc<JetStreamQueue>) -> Self {
        Self::partition(queue, 0)
    }

    pub fn partition(queue: Arc<JetStreamQueue>, partition: u16) -> Self {
        let label = if queue.names.partitions <= 1 {
            queue.label().to_owned()
        } else {
            format!("{}/p{partition}", queue.label())
        };
        Self { queue, partition, label, messages: Mutex::new(None) }
    }

    /// One source per partition that ingester `index` of `count` owns.
    pub fn owned(queue: &Arc<JetStreamQueue>, index: u16, count: u16) -> Vec<Self> {
        queue
            .names
            .owned_partitions(index, count)
            .into_iter()
            .map(|p| Self::partition(queue.clone(), p))
            .collect()
    }
}

#[async_trait]
impl CommandSource for JetStreamSource {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let queue = &self.queue;
        let mut guard = self.messages.lock().await;
        if guard.is_none() {
            let consumer = queue.consumer(self.partition).await?;
            let stream = consumer
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
            *guard = Some(Pull { stream, last: None });
        }
        let Some(pull) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // `max` counts commands; a message may carry several (group commit).
        let mut commands = 0;
        let first = match tokio::time::timeout(wait, pull.stream.next()).await {
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
        let mut next = Some(first);
        // Fill the batch with what arrives within a couple of milliseconds: bigger batches mean fewer
        // store round trips per command, and the wait is small next to a commit.
        let fill_until = tokio::time::Instant::now() + FILL_WINDOW;
        while let Some(m) = next.take() {
            if !in_sequence(&mut pull.last, &m) {
                // Deliveries went missing: drop this pull (what it brought after the gap comes again,
                // behind the missing ones, from a consumer restarted at its first unacknowledged message).
                tracing::warn!(queue = %self.label, "deliveries missing from the pull; restarting it");
                *guard = None;
                return Ok(out);
            }
            commands += crate::command_count(&m.payload);
            out.push(wrap(queue, m));
            if commands >= max {
                break;
            }
            next = match pull.stream.next().now_or_never() {
                Some(n) => n.and_then(Result::ok),
                None => tokio::time::timeout_at(fill_until, pull.stream.next())
                    .await
                    .ok()
                    .flatten()
                    .and_then(Result::ok),
            };
        }
        Ok(out)
    }

    fn name(&self) -> &str {
        &self.label
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
        // command-id uniqueness still makes a double requeue harmless. Back to its issuer's partition.
        let partition = crate::decode_batch(&msg.payload)
            .ok()
            .and_then(|commands| commands.first().map(|c| self.names.partition_of(&c.actor)))
            .unwrap_or(0);
        self.publish_to(partition, &format!("{command_id}/requeue/{sequence}"), msg.payload.clone()).await?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_partition_keeps_the_bare_subject_and_consumer() {
        let names = QueueNames::default();
        assert_eq!(names.command_subject(0), "social.commands");
        assert_eq!(names.consumer_of(0), ("ingester".to_owned(), None));
        assert_eq!(names.partition_of(&domain::UserId::parse("alice").unwrap()), 0);
        assert_eq!(names.owned_partitions(0, 1), vec![0]);
    }

    #[test]
    fn partitions_split_issuers_and_every_partition_has_exactly_one_owner() {
        let names = QueueNames::default().scaled(12, 3);
        assert_eq!(names.command_subject(7), "social.commands.7");
        assert_eq!(names.consumer_of(7), ("ingester-p7".to_owned(), Some("social.commands.7".to_owned())));
        let alice = domain::UserId::parse("alice").unwrap();
        assert_eq!(names.partition_of(&alice), names.partition_of(&alice), "stable");
        let used: std::collections::HashSet<u16> = (0..500)
            .map(|i| names.partition_of(&domain::UserId::parse(format!("user{i}")).unwrap()))
            .collect();
        assert_eq!(used.len(), 12, "issuers spread over every partition");
        for replicas in [1, 2, 5, 12] {
            let mut owned: Vec<u16> =
                (0..replicas).flat_map(|i| names.owned_partitions(i, replicas)).collect();
            owned.sort_unstable();
            assert_eq!(owned, (0..12).collect::<Vec<_>>(), "{replicas} replicas");
        }
    }
}
