//! What every API request passes before its route: the size of its head (answered 414/431 with
//! the JSON error body, where hyper alone would answer an empty one) and the CORS policy.

use std::time::{Duration, Instant};

use api::ErrorCode;
use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderName, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{
    Cors,
    api::{ApiError, Shared},
};

use limits::{API_HEADER_BYTES_MAX, API_HEADERS_MAX, API_URI_BYTES_MAX};

/// Refuses a request whose target or header block is over its limit, with the JSON body.
/// (A head over hyper's read buffer, [`limits::API_READ_BUFFER_BYTES`], or with more header
/// fields than hyper parses is refused by hyper itself: 431 with no body.)
pub(crate) async fn head_limits(request: Request, next: Next) -> Response {
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > API_URI_BYTES_MAX {
        let message = format!("the request target is {target} bytes, over the limit of {API_URI_BYTES_MAX}");
        return ApiError::new(StatusCode::URI_TOO_LONG, ErrorCode::TooLarge, message).into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > API_HEADERS_MAX || bytes > API_HEADER_BYTES_MAX {
        let message = format!(
            "{} header fields of {bytes} bytes: at most {API_HEADERS_MAX} fields of {API_HEADER_BYTES_MAX} bytes",
            headers.len()
        );
        return ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, ErrorCode::TooLarge, message)
            .into_response();
    }
    next.run(request).await
}

/// Times every request, from its head read to its answer's head (a stream: to its first byte),
/// for the host's `api_request_duration_seconds{route, status}`.
pub(crate) async fn timed(State(e): State<Shared>, request: Request, next: Next) -> Response {
    let at = Instant::now();
    // A clone of the router's `Arc<str>`: no allocation per request.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    e.host.api_request(route, response.status().as_u16(), at.elapsed());
    response
}

/// The CORS layer of a policy (`None`: no CORS headers). Scripts may `GET` and `POST` with a
/// `Content-Type` (a JSON or binary submission) and a `Last-Event-ID`, and read `Retry-After`.
pub(crate) fn cors_layer(cors: &Cors) -> Option<CorsLayer> {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, HeaderName::from_static("last-event-id")])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(3_600));
    match cors {
        Cors::Any => Some(layer.allow_origin(AllowOrigin::any())),
        Cors::Origins(origins) => Some(layer.allow_origin(
            origins.iter().filter_map(|o| header::HeaderValue::from_str(o).ok()).collect::<Vec<_>>(),
        )),
        Cors::Off => None,
    }
}
