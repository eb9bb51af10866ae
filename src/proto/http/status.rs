//! The response statuses this server sends: one enum, so a status is
//! never a string to parse back.

use std::fmt;

/// An HTTP response status (RFC 9110 §15), as this server uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 200: the request was served.
    Ok,
    /// 400: the request is malformed.
    BadRequest,
    /// 404: no such path.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 408: the request head did not arrive in time.
    RequestTimeout,
    /// 413: the body is over `--max-body`.
    ContentTooLarge,
    /// 414: the request line alone is over the head limit.
    UriTooLong,
    /// 431: the request head is over its limit.
    HeaderFieldsTooLarge,
    /// 501: a transfer coding other than chunked.
    NotImplemented,
    /// 505: an HTTP major version other than 1.
    VersionNotSupported,
}

impl Status {
    /// Every status, for tests and tables.
    pub const ALL: [Status; 10] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::RequestTimeout,
        Status::ContentTooLarge,
        Status::UriTooLong,
        Status::HeaderFieldsTooLarge,
        Status::NotImplemented,
        Status::VersionNotSupported,
    ];

    /// The three-digit code.
    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::HeaderFieldsTooLarge => 431,
            Status::NotImplemented => 501,
            Status::VersionNotSupported => 505,
        }
    }

    /// The reason phrase: `Not Found`. An error response's body repeats it.
    pub const fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::ContentTooLarge => "Content Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::NotImplemented => "Not Implemented",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    /// The status line's tail, as it goes on the wire: `404 Not Found`.
    pub const fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::ContentTooLarge => "413 Content Too Large",
            Status::UriTooLong => "414 URI Too Long",
            Status::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            Status::NotImplemented => "501 Not Implemented",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }
}

/// `404 Not Found`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.line())
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn each_line_is_the_code_and_the_reason() {
        for status in Status::ALL {
            assert_eq!(
                status.line(),
                format!("{} {}", status.code(), status.reason())
            );
        }
    }
}
