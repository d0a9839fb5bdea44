//! The MongoDB document target: post, profile and comment documents for queries beyond the capped
//! timelines. It takes the same planned operations as the other targets and keeps only the document ones
//! (`user:*` and `post:*` hashes, `comments:*`), applied in one multi-document transaction together with
//! its checkpoint (MongoDB must run as a replica set, a single-node one is enough). The document operations
//! never depend on fan-out state, so this target is planned in "fresh" mode and needs no reads.
//!
//! UNTESTED HERE: no MongoDB server can run on the development machines. Its tests run when `MONGODB_URL`
//! is set, and in the kind end-to-end test.

use crate::dump::Dump;
use crate::ops::Op;
use crate::target::{KvRead, ProjectionError, ProjectionTarget, TargetState};
use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct MongoTarget {
    name: String,
    client: Client,
    db: String,
}

fn unavailable(e: mongodb::error::Error) -> ProjectionError {
    ProjectionError::Unavailable(e.to_string())
}

impl MongoTarget {
    /// `url` must name the database (`mongodb://host/socialnet?replicaSet=rs0`).
    pub async fn connect(name: &str, url: &str) -> Result<Self, ProjectionError> {
        let client = Client::with_uri_str(url).await.map_err(unavailable)?;
        let db = client.default_database().map(|d| d.name().to_owned()).unwrap_or_else(|| "socialnet".into());
        Ok(Self { name: name.to_owned(), client, db })
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.client.database(&self.db).collection(&format!("{}_{name}", self.name))
    }
}

/// Reads are not offered by the document target; the planner never asks in fresh mode.
struct NoReads;

#[async_trait]
impl KvRead for NoReads {
    async fn hgetall_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<HashMap<String, String>>>, ProjectionError> {
        Ok(vec![None; keys.len()])
    }
    async fn zrevrange_by_score(
        &self,
        _: &str,
        _: Option<i64>,
        _: usize,
    ) -> Result<Vec<(String, i64)>, ProjectionError> {
        Ok(Vec::new())
    }
    async fn zrange_all(&self, _: &str) -> Result<Vec<(String, i64)>, ProjectionError> {
        Ok(Vec::new())
    }
    async fn zinter_members(&self, _: &str, _: &str) -> Result<Vec<String>, ProjectionError> {
        Ok(Vec::new())
    }
    async fn zcard_many(&self, keys: &[String]) -> Result<Vec<usize>, ProjectionError> {
        Ok(vec![0; keys.len()])
    }
    async fn hget_many(&self, keys: &[String], _: &str) -> Result<Vec<Option<String>>, ProjectionError> {
        Ok(vec![None; keys.len()])
    }
}

#[async_trait]
impl ProjectionTarget for MongoTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn view(&self, _generation: u64) -> Arc<dyn KvRead> {
        Arc::new(NoReads)
    }

    async fn current_generation(&self) -> Result<Option<u64>, ProjectionError> {
        Ok(Some(1))
    }

    async fn allocate_generation(&self) -> Result<u64, ProjectionError> {
        Ok(1)
    }

    async fn state(&self, _generation: u64) -> Result<Option<TargetState>, ProjectionError> {
        let d = self.coll("meta").find_one(doc! {"_id": "checkpoint"}).await.map_err(unavailable)?;
        d.and_then(|d| d.get_str("state").ok().map(str::to_owned))
            .map(|s| serde_json::from_str(&s).map_err(|e| ProjectionError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn apply(
        &self,
        _generation: u64,
        ops: &[Op],
        expected: Option<TargetState>,
        next: TargetState,
    ) -> Result<(), ProjectionError> {
        let mut session = self.client.start_session().await.map_err(unavailable)?;
        session.start_transaction().await.map_err(unavailable)?;
        let meta = self.coll("meta");
        let current =
            meta.find_one(doc! {"_id": "checkpoint"}).session(&mut session).await.map_err(unavailable)?;
        let current: Option<TargetState> =
            current.and_then(|d| d.get_str("state").ok().and_then(|s| serde_json::from_str(s).ok()));
        if current.map(|s| s.cursor) != expected.map(|s| s.cursor) {
            let _ = session.abort_transaction().await;
            return Err(ProjectionError::Conflict("mongo checkpoint moved".into()));
        }
        for op in ops {
            let (coll, id, update) = match op {
                Op::HSet { key, fields } => match doc_key(key) {
                    Some((c, id)) => {
                        let mut set = Document::new();
                        for (f, v) in fields {
                            set.insert(f.clone(), v.clone());
                        }
                        (c, id, Some(doc! {"$set": set}))
                    }
                    None => continue,
                },
                Op::HIncr { key, field, by } => match doc_key(key) {
                    Some((c, id)) => (c, id, Some(doc! {"$inc": {field.clone(): *by}})),
                    None => continue,
                },
                Op::Del { key } => {
                    if let Some((c, id)) = doc_key(key) {
                        self.coll(c)
                            .delete_one(doc! {"_id": id})
                            .session(&mut session)
                            .await
                            .map_err(unavailable)?;
                    } else if let Some(post) = key.strip_prefix("comments:") {
                        self.coll("comments")
                            .delete_many(doc! {"post_id": post})
                            .session(&mut session)
                            .await
                            .map_err(unavailable)?;
                    }
                    continue;
                }
                Op::ZAdd { key, score, member } if key.starts_with("comments:") => {
                    let c: contract::api::Comment =
                        serde_json::from_str(member).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                    let post = key.trim_start_matches("comments:").to_owned();
                    let set = doc! {
                        "post_id": post, "author_id": c.author_id, "body": c.body, "created_at": c.created_at,
                        "position": *score,
                    };
                    ("comments", c.comment_id, Some(doc! {"$set": set}))
                }
                _ => continue,
            };
            if let Some(update) = update {
                self.coll(coll)
                    .update_one(doc! {"_id": id}, update)
                    .upsert(true)
                    .session(&mut session)
                    .await
                    .map_err(unavailable)?;
            }
        }
        let state = serde_json::to_string(&next).unwrap_or_default();
        meta.update_one(doc! {"_id": "checkpoint"}, doc! {"$set": {"state": state}})
            .upsert(true)
            .session(&mut session)
            .await
            .map_err(unavailable)?;
        session.commit_transaction().await.map_err(unavailable)
    }

    async fn set_current(&self, _generation: u64) -> Result<(), ProjectionError> {
        Ok(())
    }

    async fn drop_generation(&self, _generation: u64) -> Result<u64, ProjectionError> {
        for c in ["users", "posts", "comments", "meta"] {
            self.coll(c).drop().await.map_err(unavailable)?;
        }
        Ok(0)
    }

    async fn dump(&self, _generation: u64) -> Result<Dump, ProjectionError> {
        Err(ProjectionError::Unavailable("the MongoDB target cannot be dumped for verify".into()))
    }

    async fn ping(&self) -> Result<(), ProjectionError> {
        self.client.database(&self.db).run_command(doc! {"ping": 1}).await.map_err(unavailable)?;
        Ok(())
    }
}

/// `user:{id}` → (users, id); `post:{id}` → (posts, id).
fn doc_key(key: &str) -> Option<(&'static str, String)> {
    if let Some(id) = key.strip_prefix("user:") {
        Some(("users", id.to_owned()))
    } else {
        key.strip_prefix("post:").map(|id| ("posts", id.to_owned()))
    }
}
