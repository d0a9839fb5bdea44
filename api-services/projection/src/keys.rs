//! Key names of the read model, relative to a target's generation (`{target}:g{N}:`). Targets add the
//! prefix; the planner, queries and dumps only ever see these relative names.

use domain::{PostId, UserId};

#[derive(Debug, Clone, Copy)]
pub struct Keys;

impl Keys {
    pub fn user(u: &UserId) -> String {
        format!("user:{u}")
    }
    pub fn followers(u: &UserId) -> String {
        format!("followers:{u}")
    }
    pub fn following(u: &UserId) -> String {
        format!("following:{u}")
    }
    /// Everything the user posted (not capped), member = post id, score = position.
    pub fn user_timeline(u: &UserId) -> String {
        Self::user_timeline_of(u.as_str())
    }
    /// [`Keys::user_timeline`] of an id read back from the model (already valid).
    pub fn user_timeline_of(u: &str) -> String {
        format!("utl:{u}")
    }
    /// The user's home feed (fan-out on write, capped), member = post id, score = position.
    pub fn home(u: &UserId) -> String {
        format!("home:{u}")
    }
    pub fn post(p: &PostId) -> String {
        Self::post_of(&p.to_string())
    }
    /// [`Keys::post`] of an id read back from the model (already valid).
    pub fn post_of(p: &str) -> String {
        format!("post:{p}")
    }
    /// Comments of a post: member = the comment as JSON, score = position.
    pub fn comments(p: &PostId) -> String {
        format!("comments:{p}")
    }
    /// Authors with more followers than the fan-out threshold (merged into homes at read time).
    pub const CELEBS: &'static str = "celebs";
}
