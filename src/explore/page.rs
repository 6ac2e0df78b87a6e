//! The page, compiled into the binary: it works offline, with nothing fetched but the API.

use axum::http::header;
use axum::response::IntoResponse;

/// `GET /`.
pub fn html() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../assets/explore/index.html"),
    )
}

/// `GET /app.js`.
pub fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../assets/explore/app.js"),
    )
}

/// `GET /style.css`.
pub fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/explore/style.css"),
    )
}
