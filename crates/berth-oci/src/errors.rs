//! The table of registry error codes: code, HTTP status, default message.
//! Codes are those of the OCI distribution specification, plus `UNKNOWN`
//! for failures of the registry itself.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    /// A body above the configured limit (413).
    TooLarge,
    /// An upload chunk out of order, or a blob range outside the blob (416).
    RangeInvalid,
    Unauthorized,
    Denied,
    /// The request conflicts with what is stored: a blob or manifest still in use (409).
    InUse,
    Unsupported,
    TooManyRequests,
    /// `n` of a paged listing is not a number.
    PaginationNumberInvalid,
    /// A service berth depends on (the database, Redis, object storage) does not answer (503).
    Unavailable,
    Unknown,
}

impl ErrorCode {
    /// (code, status, message)
    fn entry(self) -> (&'static str, u16, &'static str) {
        use ErrorCode::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", 404, "blob unknown to registry"),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid"),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"),
            DigestInvalid => ("DIGEST_INVALID", 400, "provided digest did not match uploaded content"),
            ManifestBlobUnknown => (
                "MANIFEST_BLOB_UNKNOWN",
                400,
                "manifest references a manifest or blob unknown to registry",
            ),
            ManifestInvalid => ("MANIFEST_INVALID", 400, "manifest invalid"),
            ManifestUnknown => ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry"),
            NameInvalid => ("NAME_INVALID", 400, "invalid repository name"),
            NameUnknown => ("NAME_UNKNOWN", 404, "repository name not known to registry"),
            SizeInvalid => ("SIZE_INVALID", 400, "provided length did not match content length"),
            TooLarge => ("SIZE_INVALID", 413, "content is larger than this registry accepts"),
            RangeInvalid => ("BLOB_UPLOAD_INVALID", 416, "requested range is not satisfiable"),
            Unauthorized => ("UNAUTHORIZED", 401, "authentication required"),
            Denied => ("DENIED", 403, "requested access to the resource is denied"),
            InUse => ("DENIED", 409, "the content is still in use"),

            Unsupported => ("UNSUPPORTED", 405, "the operation is unsupported"),
            TooManyRequests => ("TOOMANYREQUESTS", 429, "too many requests"),
            PaginationNumberInvalid => ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"),
            Unavailable => ("UNAVAILABLE", 503, "a service the registry depends on is unavailable"),
            Unknown => ("UNKNOWN", 500, "unknown error"),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    pub fn status(self) -> u16 {
        self.entry().1
    }

    pub fn message(self) -> &'static str {
        self.entry().2
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode::*;

    #[test]
    fn statuses_follow_the_spec() {
        for (code, status, text) in [
            (BlobUnknown, 404, "BLOB_UNKNOWN"),
            (BlobUploadUnknown, 404, "BLOB_UPLOAD_UNKNOWN"),
            (DigestInvalid, 400, "DIGEST_INVALID"),
            (ManifestBlobUnknown, 400, "MANIFEST_BLOB_UNKNOWN"),
            (ManifestInvalid, 400, "MANIFEST_INVALID"),
            (ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
            (NameInvalid, 400, "NAME_INVALID"),
            (NameUnknown, 404, "NAME_UNKNOWN"),
            (TooLarge, 413, "SIZE_INVALID"),
            (RangeInvalid, 416, "BLOB_UPLOAD_INVALID"),
            (Unauthorized, 401, "UNAUTHORIZED"),
            (Denied, 403, "DENIED"),
            (Unsupported, 405, "UNSUPPORTED"),
            (TooManyRequests, 429, "TOOMANYREQUESTS"),
            (Unavailable, 503, "UNAVAILABLE"),
            (Unknown, 500, "UNKNOWN"),
        ] {
            assert_eq!(code.status(), status, "{code:?}");
            assert_eq!(code.as_str(), text);
        }
    }
}
