//! The REST API's OpenAPI 3 description: the descriptions that the route modules register
//! with their handlers come in; `GET /openapi.json` goes out. Nothing here lists routes by
//! hand, so the document follows the router (a test checks that it covers every route).

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hark gateway API",
        description = "The OpenFaaS-compatible REST API of the Hark gateway, its channel \
            webhooks (Slack, GitHub, hooks, Alexa) and its system routes. Management routes \
            take `Authorization: Bearer TOKEN` (the admin token is in the data directory; \
            `POST /system/tokens` makes scoped ones).",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody)),
    tags(
        (name = "functions", description = "Deploy, list, scale and remove functions; logs and activations"),
        (name = "invoke", description = "Call functions synchronously"),
        (name = "async", description = "The durable queue of async calls"),
        (name = "schedules", description = "Cron-scheduled functions"),
        (name = "secrets", description = "Secrets that functions read"),
        (name = "channels", description = "Signed webhooks of Slack, GitHub and hooks routes"),
        (name = "alexa", description = "Alexa skills"),
        (name = "system", description = "Health, tokens, metrics and this document"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Completes the routes' descriptions into the document: title, tags, security scheme,
/// and axum's `{*tail}` path syntax written as OpenAPI's `{tail}`.
pub fn document(routes: Document) -> Document {
    let mut doc = ApiDoc::openapi().merge_from(routes);
    doc.paths.paths = std::mem::take(&mut doc.paths.paths)
        .into_iter()
        .map(|(path, item)| (openapi_path(&path), item))
        .collect();
    unique_operation_ids(&mut doc);
    doc
}

/// `routes!` names each operation after its handler, so one handler serving several
/// methods repeats its id; OpenAPI wants them unique. Repeats get the method as a prefix
/// (`post_enqueue`, `put_enqueue`).
fn unique_operation_ids(doc: &mut Document) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let each = |doc: &mut Document, f: &mut dyn FnMut(&str, &mut Option<String>)| {
        for item in doc.paths.paths.values_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("options", &mut item.options),
                ("head", &mut item.head),
                ("patch", &mut item.patch),
                ("trace", &mut item.trace),
            ] {
                if let Some(op) = op {
                    f(method, &mut op.operation_id);
                }
            }
        }
    };
    each(doc, &mut |_, id| {
        if let Some(id) = id {
            *seen.entry(id.clone()).or_default() += 1;
        }
    });
    each(doc, &mut |method, id| {
        if let Some(name) = id.as_ref().filter(|id| seen.get(*id) > Some(&1)) {
            *id = Some(format!("{method}_{name}"));
        }
    });
}

/// An axum route path in OpenAPI's syntax: `/function/{name}/{*path}` →
/// `/function/{name}/{path}`.
pub fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// The document, built once from the gateway's routes.
pub fn cached() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| document(crate::server::documented_routes().into_openapi()))
}

/// `GET /openapi.json`: this API's OpenAPI 3 description.
#[utoipa::path(get, path = "/openapi.json", tag = "system",
    description = "This document: the OpenAPI 3 description of the gateway's REST API.",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi_json() -> Json<&'static Document> {
    Json(cached())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Routes the gateway serves that are deliberately not part of the REST API
    /// description, by path prefix:
    const UNDOCUMENTED: &[&str] = &[
        // The web UI: HTML pages and their assets, not an API.
        "/ui",
        // WebDriver sessions for functions (W3C WebDriver protocol, proxied as is).
        "/webdriver",
    ];
    /// Exact paths not described: `/` redirects to the web UI.
    const UNDOCUMENTED_EXACT: &[&str] = &["/"];

    fn undocumented(path: &str) -> bool {
        UNDOCUMENTED_EXACT.contains(&path)
            || UNDOCUMENTED
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    }

    /// The paths the gateway's router serves, read from the router itself. axum has no
    /// public route list, but its `Debug` output names every registered path
    /// (`RouteId(3): "/healthz"`); the count check below fails loudly if that changes.
    fn served_paths() -> BTreeSet<String> {
        let debug = format!("{:?}", crate::server::routes());
        // Only the path router; the fallback router's catch-all is not a route.
        let paths = debug
            .split_once("path_router:")
            .and_then(|(_, rest)| rest.split_once("fallback_router:"))
            .map(|(paths, _)| paths)
            .unwrap_or_default();
        let re = regex::Regex::new(r#"RouteId\(\d+\): "([^"]*)""#).unwrap();
        re.captures_iter(paths).map(|c| c[1].to_owned()).collect()
    }

    fn document_paths() -> BTreeSet<String> {
        cached().paths.paths.keys().cloned().collect()
    }

    #[test]
    fn every_route_the_router_serves_is_described() {
        let served = served_paths();
        assert!(
            served.len() >= 20 && served.contains("/system/functions"),
            "could not read the router's paths (axum's Debug output changed?): {served:?}"
        );
        let described = document_paths();
        let missing: Vec<_> = served
            .iter()
            .filter(|p| !undocumented(p))
            .filter(|p| !described.contains(&openapi_path(p)))
            .collect();
        assert!(
            missing.is_empty(),
            "routes without an OpenAPI description (add #[utoipa::path] and register \
             them with routes!): {missing:?}"
        );
        let served_openapi: BTreeSet<String> = served.iter().map(|p| openapi_path(p)).collect();
        let stale: Vec<_> = described
            .iter()
            .filter(|p| !served_openapi.contains(*p))
            .collect();
        assert!(stale.is_empty(), "described but not served: {stale:?}");
    }

    #[test]
    fn the_channel_webhooks_and_system_routes_are_described() {
        let described = document_paths();
        for path in [
            "/alexa/{skill}",
            "/slack/{app}",
            "/github/{app}",
            "/hooks/{name}",
            "/function/{name}",
            "/function/{name}/{path}",
            "/async-function/{name}",
            "/system/functions",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(described.contains(path), "{path} is not described");
        }
    }

    #[test]
    fn the_document_is_valid_openapi_3() {
        let json = serde_json::to_string(cached()).unwrap();
        let doc = oas3::from_json(&json)
            .unwrap_or_else(|e| panic!("not an OpenAPI 3 document: {e}\n{json}"));
        assert!(doc.openapi.starts_with("3."), "version {}", doc.openapi);
        let components = doc.components.as_ref().expect("components");
        assert!(components.security_schemes.contains_key("bearer"));
        assert!(components.schemas.contains_key("FunctionDeployment"));

        let mut ids = BTreeSet::new();
        for (path, method, op) in doc.operations() {
            let templated: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert!(
                !path.contains('*'),
                "{path}: axum syntax leaked into the document"
            );
            let id = op.operation_id.clone().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(ids.insert(id.clone()), "operationId {id} is not unique");
            assert!(
                op.responses.as_ref().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let declared: BTreeSet<String> = op
                .parameters
                .iter()
                .filter_map(|p| p.resolve(&doc).ok())
                .filter(|p| p.location == oas3::spec::ParameterIn::Path)
                .map(|p| p.name)
                .collect();
            let declared: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
            assert_eq!(
                declared, templated,
                "{method} {path}: path parameters do not match the template"
            );
        }
        assert!(ids.len() >= 30, "only {} operations", ids.len());

        // Every `$ref` names a schema the document defines.
        let re = regex::Regex::new(r##""\$ref":"#/components/schemas/([^"]+)""##).unwrap();
        for c in re.captures_iter(&json) {
            assert!(
                components.schemas.contains_key(&c[1]),
                "dangling $ref {}",
                &c[1]
            );
        }
    }
}
