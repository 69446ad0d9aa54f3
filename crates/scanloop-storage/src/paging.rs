//! One page of a query at a time, with an opaque page token for the caller (the driver's paging
//! state, URL-safe base64). Used by every `List*` method.

use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use crate::DbError;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("page_token is not one this service issued")]
    BadToken,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Rows of one page and the token of the next ("" on the last page).
pub async fn page<R>(
    session: &Session,
    statement: &PreparedStatement,
    values: impl SerializeRow,
    page_size: u32,
    page_token: &str,
) -> Result<(Vec<R>, String), PageError>
where
    R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
{
    let paging = if page_token.is_empty() {
        PagingState::start()
    } else {
        let raw = data_encoding::BASE64URL_NOPAD
            .decode(page_token.as_bytes())
            .map_err(|_| PageError::BadToken)?;
        PagingState::new_from_raw_bytes(raw)
    };
    let mut statement = statement.clone();
    statement.set_page_size(page_size.clamp(1, 5_000) as i32);
    let (result, next) = session
        .execute_single_page(&statement, values, paging)
        .await
        .map_err(|error| {
            // A token that decodes but is not a paging state is refused by the server.
            if error.to_string().to_lowercase().contains("paging") {
                PageError::BadToken
            } else {
                PageError::Db(error.into())
            }
        })?;
    let rows = result.into_rows_result().map_err(DbError::from)?;
    let items = rows
        .rows::<R>()
        .map_err(DbError::from)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(DbError::new)?;
    let next = match next {
        PagingStateResponse::HasMorePages { state } => state
            .as_bytes_slice()
            .map(|bytes| data_encoding::BASE64URL_NOPAD.encode(bytes))
            .unwrap_or_default(),
        PagingStateResponse::NoMorePages => String::new(),
    };
    Ok((items, next))
}
