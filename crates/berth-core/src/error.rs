use berth_oci::ErrorCode;

/// An error a client is told about: an OCI code, a message, optional detail.
/// Internal failures become `UNKNOWN` with a generic message; their cause is
/// logged once where they are converted, never sent to the client.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn code(code: ErrorCode) -> Error {
        Error::new(code, code.message())
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Error {
        self.detail = Some(detail);
        self
    }

    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Error {
        tracing::error!(%cause, "{context}");
        Error::new(ErrorCode::Unknown, "internal error; see the registry's log")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<berth_db::DbError> for Error {
    fn from(e: berth_db::DbError) -> Error {
        match e {
            // A name already taken, a row still in use: the caller's to fix (409).
            berth_db::DbError::Conflict(m) => Error::new(ErrorCode::InUse, m),
            e => Error::internal("database error", e),
        }
    }
}
