use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// RFC 9457 problem details: the body of every error answer, as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `https://socialnet.io/problems/bad-request`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, the same for every problem of its kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a person.
    pub detail: String,
}
