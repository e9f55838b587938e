//! `keyless audit serve`: a read-only review page over the issuance record and the synced CT log
//! index. Server-rendered HTML, inline SVG charts and a few lines of JavaScript; nothing is
//! fetched from elsewhere, so it works air-gapped.
//!
//! The markup is built with `maud`, so every value (identities and extension values come from
//! tokens) is escaped by the type system: see `pages` for the two constants that are not.

#![forbid(unsafe_code)]

mod charts;
mod pages;
mod unfinished;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use keyless_audit::index::LogIndex;
use keyless_audit::state;
use keyless_audit::store::{RecordSource, read_records_from};
use keyless_config::Config;

/// What every request reads: the audit directory, where the record is, the token if any, the
/// CA's name.
struct Page {
    dir: PathBuf,
    source: RecordSource,
    token: Option<String>,
    ca_name: String,
}

/// Serves the page on `listen` until `shutdown` completes.
pub async fn serve(
    config: Config,
    dir: PathBuf,
    source: RecordSource,
    listen: SocketAddr,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ca_name = config.ca.chain_path().display().to_string();
    let page = Arc::new(Page {
        dir,
        source,
        token,
        ca_name,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    println!("keyless: review page on http://{}", listener.local_addr()?);
    axum::serve(listener, app(page))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn app(page: Arc<Page>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/cert/{serial}", get(detail))
        .layer(axum::middleware::from_fn_with_state(page.clone(), authorize))
        .with_state(page)
}

/// With a token configured, every request needs it: `Authorization: Bearer`, or the cookie set
/// by visiting once with `?token=`.
async fn authorize(State(page): State<Arc<Page>>, req: Request, next: Next) -> Response {
    let Some(want) = &page.token else {
        return next.run(req).await;
    };
    // Constant time over the expected length.
    let same = |got: &str| aws_lc_rs::constant_time::verify_slices_are_equal(got.as_bytes(), want.as_bytes()).is_ok();
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("keyless_review="));
    if bearer.is_some_and(same) || cookie.is_some_and(same) {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or_default();
    if let Some(t) = query.split('&').find_map(|kv| kv.strip_prefix("token="))
        && same(t)
    {
        let mut resp = Redirect::to(req.uri().path()).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("keyless_review={t}; HttpOnly; SameSite=Strict; Path=/")) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response()
}

/// The synced CT log index, when some log was synced into it.
fn open_index(page: &Page) -> Option<LogIndex> {
    let idx = LogIndex::open(&page.dir).ok()?;
    (!idx.logs().ok()?.is_empty()).then_some(idx)
}

fn unavailable(e: &keyless_audit::AuditError) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, pages::unavailable(&e.to_string())).into_response()
}

async fn index(State(page): State<Arc<Page>>, Query(params): Query<pages::Params>) -> Response {
    let records = match read_records_from(&page.source) {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let idx = open_index(&page);
    pages::index(&pages::Overview {
        records: &records,
        params: &params,
        verify: state::load(&page.dir, "verify"),
        cross_check: state::load(&page.dir, "cross-check"),
        ca_name: &page.ca_name,
        index: idx.as_ref(),
    })
    .into_response()
}

async fn detail(State(page): State<Arc<Page>>, UrlPath(serial): UrlPath<String>) -> Response {
    let records = match read_records_from(&page.source) {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let found = records
        .iter()
        .find_map(|r| Some((r, r.certificate.as_ref().filter(|c| c.serial == serial)?)));
    match found {
        Some((r, c)) => pages::certificate(r, c, open_index(&page).as_ref()).into_response(),
        None => match pages::intent(&records, &serial) {
            Some(markup) => markup.into_response(),
            None => (StatusCode::NOT_FOUND, pages::not_found(&serial)).into_response(),
        },
    }
}
