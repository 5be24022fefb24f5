//! What every API request passes, once, around the router (not per route: axum's
//! `Router::layer` would wrap and clone every route's service — measured 20–25 % of the
//! throughput of small answers): the size of its head (414/431 with the JSON error body, where
//! hyper alone would answer an empty one), its body's deadline, its timing for the metrics, and
//! outside it all the CORS policy.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use api::{ErrorCode, routes};
use axum::{
    Router,
    body::Body,
    http::{HeaderName, Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use tower::{Service, ServiceExt as _};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{
    Cors,
    api::{ApiError, Shared},
};

use limits::{API_HEADER_BYTES_MAX, API_HEADERS_MAX, API_URI_BYTES_MAX};

/// The API as one service: the router behind the gate, behind the CORS policy — which only a
/// request with an `Origin` (a browser's) passes through: CORS headers mean nothing to other
/// clients, and the policy's work on every answer (its `Vary` headers) cost 7–9 % of the
/// throughput of small answers.
pub(crate) fn service(router: Router, explorer: Shared) -> Api {
    let gate = Gate { router, explorer };
    let cors = cors_layer(&gate.explorer.cors).map(|layer| tower::Layer::layer(&layer, gate.clone()));
    Api(Arc::new(Policies { gate, cors }))
}

/// The API's service ([`service`]): hyper's kind, called by reference — cloned once per
/// connection (one reference count), never per request.
#[derive(Clone)]
pub(crate) struct Api(Arc<Policies>);

struct Policies {
    gate: Gate,
    cors: Option<tower_http::cors::Cors<Gate>>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<hyper::body::Incoming>> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Answer {
        match &self.0.cors {
            Some(cors) if request.headers().contains_key(header::ORIGIN) => {
                Box::pin(cors.clone().oneshot(request))
            }
            _ => self.0.gate.answer(request),
        }
    }
}

/// The router and what it serves.
#[derive(Clone)]
struct Gate {
    router: Router,
    explorer: Shared,
}

impl Gate {
    fn answer(&self, request: Request<hyper::body::Incoming>) -> Answer {
        let at = Instant::now();
        let route = routes::route_index(request.uri().path());
        let explorer = self.explorer.clone();
        let answered = move |response: Response| {
            explorer.host.api_request(route, response.status().as_u16(), at.elapsed());
            Ok(response)
        };
        if let Some(refused) = over_limits(&request) {
            return Box::pin(std::future::ready(answered(refused)));
        }
        let request = super::listener::with_body_deadline(request.map(Body::new));
        let router = self.router.clone();
        Box::pin(async move {
            match router.oneshot(request).await {
                Ok(response) => answered(response),
                Err(never) => match never {},
            }
        })
    }
}

/// The gate as tower's kind, for the CORS layer around it.
impl Service<Request<hyper::body::Incoming>> for Gate {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<hyper::body::Incoming>) -> Answer {
        self.answer(request)
    }
}

/// The answer to a request whose target or header block is over its limit, with the JSON
/// body. (A head over hyper's read buffer, [`limits::API_READ_BUFFER_BYTES`], or with more header
/// fields than hyper parses is refused by hyper itself: 431 with no body.)
fn over_limits<B>(request: &Request<B>) -> Option<Response> {
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > API_URI_BYTES_MAX {
        let message = format!("the request target is {target} bytes, over the limit of {API_URI_BYTES_MAX}");
        return Some(ApiError::new(StatusCode::URI_TOO_LONG, ErrorCode::TooLarge, message).into_response());
    }
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > API_HEADERS_MAX || bytes > API_HEADER_BYTES_MAX {
        let message = format!(
            "{} header fields of {bytes} bytes: at most {API_HEADERS_MAX} fields of {API_HEADER_BYTES_MAX} bytes",
            headers.len()
        );
        return Some(
            ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, ErrorCode::TooLarge, message)
                .into_response(),
        );
    }
    None
}

/// The CORS layer of a policy (`None`: no CORS headers). Scripts may `GET` and `POST` with a
/// `Content-Type` (a JSON or binary submission) and a `Last-Event-ID`, and read `Retry-After`.
fn cors_layer(cors: &Cors) -> Option<CorsLayer> {
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
