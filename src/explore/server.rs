//! The explorer's HTTP server: axum on tokio. Every request is checked before the model runs
//! (a bad one is a 400 with a message naming the problem; a body past [`BODY_LIMIT`] is a 413;
//! an unknown route a 404), and the model work runs on blocking threads, at most
//! [`MAX_JOBS`] at once, so the async executor never waits on a forward pass.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::page;
use super::session::{ApiError, Explorer};
use crate::error::Error;

/// The largest request body, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Model calls that run at once; more wait their turn.
pub const MAX_JOBS: usize = 4;

/// What the server shares between requests.
struct App {
    explorer: Arc<Explorer>,
    jobs: Arc<Semaphore>,
    streams: Arc<Streams>,
}

/// Generations streaming now and those that ended.
#[derive(Debug, Default, Serialize)]
struct Streams {
    active: AtomicUsize,
    finished: AtomicUsize,
    stopped_by_client: AtomicUsize,
}

/// The explorer's routes (see the module docs of [`super`] for the API).
pub fn router(explorer: Explorer) -> Router {
    let app = Arc::new(App {
        explorer: Arc::new(explorer),
        jobs: Arc::new(Semaphore::new(MAX_JOBS)),
        streams: Arc::new(Streams::default()),
    });
    Router::new()
        .route("/", get(|| async { page::html() }))
        .route("/app.js", get(|| async { page::script() }))
        .route("/style.css", get(|| async { page::style() }))
        .route("/api", get(|| async { Json(super::API) }))
        .route("/api/info", get(info))
        .route("/api/status", get(status))
        .route("/api/tokenize", post(tokenize))
        .route("/api/forward", post(forward))
        .route("/api/probe", post(probe))
        .route("/api/leak", post(leak))
        .route("/api/fault", post(fault))
        .route("/api/generate", post(generate))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Bind `addr`, saying plainly when it is taken.
///
/// # Errors
/// [`Error::Config`] naming the address and what to do.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|err| {
        let what = match err.kind() {
            std::io::ErrorKind::AddrInUse => "is already in use (another explorer?)".to_string(),
            _ => format!("cannot be listened on ({err})"),
        };
        Error::Config(format!("{addr} {what}; pick another port with --port"))
    })
}

/// Serve `router` on `listener` until `shutdown` resolves.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A JSON error response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Body {
        error: String,
    }
    let body = Body {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(message) => error(StatusCode::BAD_REQUEST, message),
            ApiError::TooLarge(message) => error(StatusCode::PAYLOAD_TOO_LARGE, message),
            ApiError::Internal(message) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

/// The request body, or what is wrong with it: 413 past the size limit, 400 for anything else
/// (not JSON, malformed, an unknown or missing field).
fn body<T: DeserializeOwned>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match payload {
        Ok(Json(value)) => Ok(value),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::TooLarge(format!(
                "the request body is larger than {BODY_LIMIT} bytes"
            )))
        }
        Err(rejection) => Err(ApiError::BadRequest(format!(
            "the request body is not what this route takes: {}",
            rejection.body_text()
        ))),
    }
}

/// Run `work` on a blocking thread once a job slot is free.
async fn on_model<T: Send + 'static>(
    app: &App,
    work: impl FnOnce(&Explorer) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = app
        .jobs
        .acquire()
        .await
        .map_err(|err| ApiError::Internal(err.to_string()))?;
    let explorer = app.explorer.clone();
    tokio::task::spawn_blocking(move || work(&explorer))
        .await
        .map_err(|err| ApiError::Internal(format!("the model's thread failed: {err}")))?
}

/// A JSON route: parse the body, run `work` on the model, answer with its result.
async fn call<Q, T>(
    app: Arc<App>,
    payload: Result<Json<Q>, JsonRejection>,
    work: fn(&Explorer, &Q) -> Result<T, ApiError>,
) -> Response
where
    Q: DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
{
    let request = match body(payload) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    match on_model(&app, move |explorer| work(explorer, &request)).await {
        Ok(result) => Json(result).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn info(State(app): State<Arc<App>>) -> Response {
    Json(app.explorer.info()).into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    Json(&*app.streams).into_response()
}

async fn tokenize(
    State(app): State<Arc<App>>,
    payload: Result<Json<super::TextRequest>, JsonRejection>,
) -> Response {
    call(app, payload, Explorer::tokenize).await
}

async fn forward(
    State(app): State<Arc<App>>,
    payload: Result<Json<super::TextRequest>, JsonRejection>,
) -> Response {
    call(app, payload, Explorer::forward).await
}

async fn probe(
    State(app): State<Arc<App>>,
    payload: Result<Json<super::ProbeRequest>, JsonRejection>,
) -> Response {
    call(app, payload, Explorer::probe).await
}

async fn leak(
    State(app): State<Arc<App>>,
    payload: Result<Json<super::LeakRequest>, JsonRejection>,
) -> Response {
    call(app, payload, Explorer::leak).await
}

async fn fault(
    State(app): State<Arc<App>>,
    payload: Result<Json<super::FaultRequest>, JsonRejection>,
) -> Response {
    call(app, payload, Explorer::fault).await
}

/// Stream a generation as server-sent events: `token` for every new token, then `done` (or
/// `error`). A client that goes away stops it at the next token.
async fn generate(
    State(app): State<Arc<App>>,
    payload: Result<Json<super::GenerateRequest>, JsonRejection>,
) -> Response {
    let request = match body(payload) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let planned = match app.explorer.plan_generation(&request) {
        Ok(planned) => planned,
        Err(err) => return err.into_response(),
    };
    let (events, received) = mpsc::channel::<Event>(64);
    let (explorer, jobs, streams) = (app.explorer.clone(), app.jobs.clone(), app.streams.clone());
    tokio::spawn(async move {
        let Ok(_slot) = jobs.acquire_owned().await else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            streams.active.fetch_add(1, Ordering::SeqCst);
            let result = explorer.generate(&planned, &mut |token| {
                let event = Event::default().event("token").json_data(&token);
                match event.map(|event| events.blocking_send(event)) {
                    Ok(Ok(())) => ControlFlow::Continue(()),
                    _ => ControlFlow::Break(()),
                }
            });
            let last = match &result {
                Ok(end) => Event::default().event("done").json_data(end),
                Err(message) => Event::default().event("error").json_data(message),
            };
            if let Ok(last) = last {
                let _ = events.blocking_send(last);
            }
            streams.active.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(end) if end.stopped => streams.stopped_by_client.fetch_add(1, Ordering::SeqCst),
                _ => streams.finished.fetch_add(1, Ordering::SeqCst),
            };
        })
        .await;
    });
    let stream = ReceiverStream::new(received).map(Ok::<_, Infallible>);
    Sse::new(stream).into_response()
}

/// A known route asked with the other method (`GET` for `POST` or back).
async fn wrong_method(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let post = format!("POST {path}");
    let wanted = if super::API.iter().any(|(route, _)| *route == post) {
        "POST"
    } else {
        "GET"
    };
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{path} takes {wanted}, not {method}; GET /api lists the routes"),
    )
}

async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such route: {}; GET /api lists the routes", uri.path()),
    )
}
