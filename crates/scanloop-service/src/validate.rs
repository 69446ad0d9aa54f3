//! Checks every service makes of the fields every request carries.

use crate::ServiceError;

/// Brand ids are slugs: they appear in codes, URLs and stream ids.
pub fn brand_id(brand_id: &str) -> Result<(), ServiceError> {
    let ok = !brand_id.is_empty()
        && brand_id.len() <= 64
        && brand_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "brand_id is required: 1-64 of a-z, 0-9, '-', '_'",
        ))
    }
}

/// Request ids make retries safe: any printable string up to 128 characters.
pub fn request_id(request_id: &str) -> Result<(), ServiceError> {
    if request_id.is_empty() {
        return Err(ServiceError::invalid(
            "request_id is required (a unique string up to 128 characters, reused only to retry)",
        ));
    }
    if request_id.len() > 128 {
        return Err(ServiceError::invalid(format!(
            "request_id is {} bytes long: at most 128 (a UUID is 36)",
            request_id.len()
        )));
    }
    if request_id.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "request_id must not contain control characters",
        ));
    }
    Ok(())
}

/// Free text a service stores (notes, reasons, references): trimmed, at most `max` characters,
/// no control characters.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, ServiceError> {
    let value = raw.trim();
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ServiceError::invalid(format!(
            "{field} must be at most {max} characters without control characters"
        )));
    }
    Ok(value.to_owned())
}

/// A UUID the caller names, in its canonical form; `message` says which one is wanted.
pub fn uuid(raw: &str, message: &str) -> Result<String, ServiceError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| ServiceError::invalid(message))
}

/// The page token asked for: empty for the first page.
pub fn page_token(page: Option<&scanloop_proto::common::v1::PageRequest>) -> &str {
    page.map_or("", |p| p.page_token.as_str())
}

/// An answer's page: the next page's token, empty after the last page.
pub fn next_page(token: String) -> Option<scanloop_proto::common::v1::PageResponse> {
    Some(scanloop_proto::common::v1::PageResponse {
        next_page_token: token,
    })
}

/// Page size asked for, defaulted and capped.
pub fn page_size(page: Option<&scanloop_proto::common::v1::PageRequest>) -> u32 {
    match page.map_or(0, |p| p.page_size) {
        0 => 50,
        n => n.min(500),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brand_ids_and_request_ids() {
        assert!(brand_id("acme-cn_1").is_ok());
        for bad in ["", "Acme", "a/b", &"x".repeat(65)] {
            assert!(brand_id(bad).is_err(), "{bad}");
        }
        assert!(request_id("r-1").is_ok());
        assert!(request_id("").is_err());
        assert!(request_id("a\nb").is_err());
        // Each refusal says what is wrong: a long id is not "required".
        let message = |id: &str| match request_id(id) {
            Err(ServiceError::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message(&"x".repeat(5_000)),
            "request_id is 5000 bytes long: at most 128 (a UUID is 36)"
        );
        assert_eq!(
            message("a\tb"),
            "request_id must not contain control characters"
        );
        assert_eq!(text("note", "  ok  ", 5).unwrap(), "ok");
        assert!(text("note", "toolong", 5).is_err());
        assert!(text("note", "a\u{7}b", 5).is_err());
    }
}
