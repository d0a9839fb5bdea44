//! Schemas of path and query parameters: each states the rule the server enforces (the domain's newtypes
//! and the read API's paging), so a client learns it from the document.

use utoipa::ToSchema;

/// A user id: the `sub` claim of the user's token. 1 to 64 of `A-Z a-z 0-9 _ . @ -`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_.@-]{1,64}$", min_length = 1, max_length = 64, example = "alice")]
pub struct UserIdParam(pub String);

/// A post id (a UUID, as the write API named it in its `202`).
#[derive(ToSchema)]
#[schema(value_type = String, format = Uuid)]
pub struct PostIdParam(pub String);

/// A command id (a UUID, as the write API named it in its `202`).
#[derive(ToSchema)]
#[schema(value_type = String, format = Uuid)]
pub struct CommandIdParam(pub String);

/// An event stream: `user-{user_id}`, `post-{uuid}` or `handle-{handle}`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^(user-[A-Za-z0-9_.@-]{1,64}|post-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|handle-[a-z0-9_]{3,30})$", example = "user-alice")]
pub struct StreamIdParam(pub String);

/// Page size.
#[derive(ToSchema)]
#[schema(value_type = u32, minimum = 1, maximum = 100, default = 20)]
pub struct Limit(pub u32);

/// Where the next page starts: the `next_cursor` of the previous page, given back unchanged (absent or
/// empty: the first page).
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^(-?[0-9]{1,18})?$", example = "1042")]
pub struct Cursor(pub String);
