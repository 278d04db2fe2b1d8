//! Responses: the OCI error body, and the headers every /v2 answer carries.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_core::Error;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// An [`Error`] as an HTTP response: `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug)]
pub struct ApiError {
    pub err: Error,
    /// Headers to add, such as where an upload stands after a 416.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A complete response to send instead (a 401 with its challenge).
    pub response: Option<Box<Response>>,
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError {
            err,
            headers: Vec::new(),
            response: None,
        }
    }
}

impl ApiError {
    pub fn with_response(mut self, r: Response) -> ApiError {
        self.response = Some(Box::new(r));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(r) = self.response {
            return *r;
        }
        let e = self.err;
        let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut entry = serde_json::json!({ "code": e.code.as_str(), "message": e.message });
        if let Some(d) = e.detail {
            entry["detail"] = d;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "errors": [entry] })).expect("error serialises");
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

pub fn header(v: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(v.as_ref()).expect("header values berth builds are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorCode;

    #[tokio::test]
    async fn error_body_and_status() {
        let r = ApiError::from(Error::new(ErrorCode::BlobUnknown, "nope").with_detail(serde_json::json!({"d": 1})))
            .into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "nope");
        assert_eq!(v["errors"][0]["detail"]["d"], 1);
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = Error::internal("ctx", "secret path /var/x");
        assert_eq!(e.code.status(), 500);
        assert!(!e.message.contains("secret"));
    }
}
