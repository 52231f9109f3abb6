//! Exit codes, and the error every command returns: one line for stderr and its exit code.

use std::fmt;

use unbox_domain::api::Problem;

/// The exit codes of `unbox`, as `--help` documents them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A failure: the server answered 5xx or 429, could not be reached, a local file could not
    /// be read or parsed, a signature did not verify.
    pub const FAILURE: u8 = 1;
    /// Usage or invalid input: bad arguments, the server refused the input (400, 413, 415,
    /// 422), an invalid membership rule, no usable hardware identity.
    pub const USAGE: u8 = 2;
    /// Not found (404), including a device that is not registered or has no profile.
    pub const NOT_FOUND: u8 = 3;
    /// Not authenticated or not allowed: no credentials, a wrong secret (401), a missing
    /// scope or an unauthorized partner (403).
    pub const UNAUTHORIZED: u8 = 4;
    /// Conflict (409, 412): the machine is already registered, a stale ETag, …
    pub const CONFLICT: u8 = 5;
    /// An import finished with failed rows (`partial` or `error`).
    pub const ROWS_FAILED: u8 = 6;
}

/// The text `unbox --help` ends with.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  failure: a server error (5xx) or rate limit (429), the server unreachable, a local file
     that cannot be read or parsed, a profile signature that does not verify
  2  usage or invalid input: bad arguments, input the server refused (400, 413, 415, 422),
     an invalid membership rule, no usable hardware identity (hwid)
  3  not found (404): an unknown id, a device that is not registered or has no profile
  4  unauthorized or forbidden (401, 403): no credentials, a wrong secret, a missing scope
  5  conflict (409, 412): e.g. the machine is already registered (ZtdDeviceAlreadyAssigned)
  6  an import finished with failed rows (status partial or error); 0 only when complete

Errors are one line on stderr: the problem's title and detail, its code in brackets, and
its field errors.";

/// A command's failure: the line for stderr and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// The problem document's `code` (`DeviceNotRegistered`, …), when the server sent one.
    pub problem: Option<String>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            problem: None,
        }
    }

    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(exit::FAILURE, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(exit::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(exit::UNAUTHORIZED, message)
    }

    /// The exit code for an HTTP error status.
    pub fn code_for_status(status: u16) -> u8 {
        match status {
            400 | 405 | 413 | 414 | 415 | 422 => exit::USAGE,
            401 | 403 => exit::UNAUTHORIZED,
            404 | 410 => exit::NOT_FOUND,
            409 | 412 => exit::CONFLICT,
            _ => exit::FAILURE,
        }
    }

    /// The error for a problem document: `title: detail [code] (field: message; …)`.
    pub fn from_problem(status: u16, problem: &Problem) -> Self {
        let mut line = problem.title.clone();
        if let Some(detail) = problem.detail.as_deref().filter(|d| !d.is_empty()) {
            line.push_str(": ");
            line.push_str(detail);
        }
        if !problem.code.is_empty() {
            line.push_str(&format!(" [{}]", problem.code));
        }
        if !problem.errors.is_empty() {
            let fields: Vec<String> = problem
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            line.push_str(&format!(" ({})", fields.join("; ")));
        }
        if let Some(device) = problem.extensions.get("deviceId").and_then(|d| d.as_str())
            && !line.contains(device)
        {
            line.push_str(&format!(" (device {device})"));
        }
        if let Some(request_id) = &problem.request_id {
            line.push_str(&format!(" (request id {request_id})"));
        }
        let mut error = Self::new(Self::code_for_status(status), line);
        error.problem = Some(problem.code.clone()).filter(|c| !c.is_empty());
        error
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        // A classified error inside the chain keeps its code.
        if let Some(inner) = error.downcast_ref::<CliError>() {
            return inner.clone();
        }
        Self::failure(format!("{error:#}"))
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        Self::failure(error.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(error: serde_json::Error) -> Self {
        Self::failure(error.to_string())
    }
}

/// The result of a command: the exit code it wants (0, or 2 for an invalid rule, 6 for an
/// import with failed rows), or an error.
pub type CmdResult = Result<u8, CliError>;

/// Makes a message one line: newlines and tabs become spaces.
pub fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() || c.is_control() {
            if !space {
                line.push(' ');
            }
            space = true;
        } else {
            line.push(c);
            space = false;
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_one_line() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "about:blank", "title": "Unprocessable Entity", "status": 422,
            "detail": "2 fields are invalid", "code": "ValidationFailed",
            "errors": [{"field": "displayName", "message": "too long"},
                       {"field": "groupTag", "message": "control character"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let error = CliError::from_problem(422, &problem);
        assert_eq!(error.code, exit::USAGE);
        assert_eq!(
            error.message,
            "Unprocessable Entity: 2 fields are invalid [ValidationFailed] (displayName: too long; groupTag: control character)"
        );
        assert_eq!(CliError::code_for_status(409), exit::CONFLICT);
        assert_eq!(CliError::code_for_status(403), exit::UNAUTHORIZED);
        assert_eq!(CliError::code_for_status(503), exit::FAILURE);
        assert_eq!(one_line("a\nb\t c\r\n"), "a b c");
    }
}
