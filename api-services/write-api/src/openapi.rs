//! The OpenAPI document of the write routes, generated from the handlers' annotations and completed with
//! what every route shares (`contract::api::openapi`).

use axum::Json;
use contract::api::openapi::Complete;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "socialnet write API", version = "1", description = "Writes answer 202 once the command is durably queued."),
    paths(
        crate::handlers::create_user,
        crate::handlers::update_user,
        crate::handlers::follow,
        crate::handlers::unfollow,
        crate::handlers::create_post,
        crate::handlers::edit_post,
        crate::handlers::delete_post,
        crate::handlers::like,
        crate::handlers::unlike,
        crate::handlers::add_comment,
        crate::handlers::command_status,
    ),
    modifiers(&Complete),
    security(("bearer" = []))
)]
pub struct ApiDoc;

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
