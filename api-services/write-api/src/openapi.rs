//! The OpenAPI document of the write routes, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

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
    components(schemas(crate::dto::Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
