//! The origin's API contract: an OpenAPI 3.1 document generated from the
//! handlers' own types and `#[utoipa::path]` annotations, served on the
//! internal listener at `GET /openapi.json` and committed as
//! `docs/openapi.json` (a test fails when the two drift; regenerate with
//! `MERIDIAN_WRITE_OPENAPI=1 cargo test -p meridian-origin openapi`).
//!
//! Every operation also answers RFC 9457 problems (`application/problem+json`)
//! for bad input, missing or refused credentials, conflicts and
//! unavailability: one `default` response added to each operation here.
//! Operations under `/v1/admin` (and `/readyz`, `/metrics`) live on the
//! internal listener; the rest on the public one.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::catalog::{handlers as catalog, model as catalog_model};
use crate::problem::{PROBLEM_JSON, Problem};
use crate::{app, cart, checkout, discovery, flash, inventory, modes, notify_me, orders};

/// `{id}` in a path, as every numeric-id route documents it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// A positive id in canonical decimal (no sign, no leading zero)
    #[allow(dead_code)]
    #[param(pattern = r"^[1-9][0-9]{0,18}$")]
    id: String,
}

/// `{sku}` in a path, as every SKU route documents it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SkuPath {
    /// A SKU: 1–64 of A-Z 0-9 -, starting with a letter or digit
    #[allow(dead_code)]
    #[param(pattern = r"^[A-Z0-9][A-Z0-9-]{0,63}$")]
    sku: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian origin API",
        description = "Catalog, inventory, carts, checkout, orders, flash sales, operating modes. Errors are RFC 9457 problems."
    ),
    paths(
        catalog::get_product,
        catalog::list_products,
        catalog::list_categories,
        catalog::create_product,
        catalog::update_product,
        inventory::handlers::availability,
        inventory::handlers::set_on_hand,
        cart::handlers::show,
        cart::handlers::add,
        cart::handlers::update,
        cart::handlers::remove,
        orders::handlers::list,
        orders::handlers::show,
        checkout::handlers::checkout,
        flash::handlers::create,
        flash::handlers::claim,
        flash::handlers::my_claims,
        flash::handlers::close,
        flash::handlers::report,
        modes::handlers::applied,
        modes::handlers::list,
        modes::handlers::show,
        modes::handlers::update,
        modes::handlers::history,
        notify_me::handlers::request,
        notify_me::handlers::list,
        discovery::handlers::recommendations,
        discovery::handlers::reviews,
        discovery::handlers::suggestions,
        app::healthz,
        app::readyz,
        app::metrics_text,
    ),
    components(schemas(Problem, catalog_model::ProductView, catalog_model::ProductInput)),
    modifiers(&Contract)
)]
pub struct ApiDoc;

/// Security schemes and the problem answer every operation may give.
struct Contract;

impl Modify for Contract {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "shopper",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let problem = ResponseBuilder::new()
            .description("A problem (RFC 9457): bad input, credentials, conflicts, unavailability")
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "Problem",
                    ))))
                    .build(),
            )
            .build();
        for item in api.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .insert("default".into(), RefOr::T(problem.clone()));
            }
        }
    }
}

/// The document as served and committed (pretty JSON, stable order).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// `GET /openapi.json` (internal listener).
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    /// The committed contract is the one the code generates.
    #[test]
    fn docs_openapi_json_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("MERIDIAN_WRITE_OPENAPI").is_some() {
            std::fs::write(path, format!("{generated}\n")).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed.trim_end() == generated.trim_end(),
            "docs/openapi.json is out of date: run `MERIDIAN_WRITE_OPENAPI=1 cargo test -p meridian-origin openapi` and commit it"
        );
    }
}
