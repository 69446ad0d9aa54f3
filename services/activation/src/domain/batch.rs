//! A batch of printed codes. Codes are derived from the batch, so issuing a million codes is one
//! event, not a million rows.

use chrono::{DateTime, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::activation::v1 as pb;

use super::code::is_valid_slug;
use super::{ActivationEvent, Rejection};

pub const MAX_QUANTITY: u32 = 1_000_000;
pub const MAX_WARRANTY_MONTHS: u32 = 240;

/// The stream of a batch. The brand is part of the name: a batch id asked for under another
/// brand names an empty stream (NOT_FOUND), whatever the code key says.
pub fn stream_id(brand_id: &str, batch_id: uuid::Uuid) -> String {
    format!("batch-{brand_id}-{batch_id}")
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub issued: Option<pb::BatchIssued>,
}

/// An issued batch as commands need it: its facts and when it was issued. `issued_at` is the
/// time the event store recorded `BatchIssued` (the server's clock, not the caller's), so no
/// product of the batch can have been sold much before it.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedBatch {
    pub facts: pb::BatchIssued,
    pub issued_at: DateTime<Utc>,
}

impl Aggregate for Batch {
    type Event = ActivationEvent;
    fn apply(&mut self, event: &ActivationEvent) {
        if let ActivationEvent::BatchIssued(issued) = event {
            self.issued = Some(issued.clone());
        }
    }
}

/// Issues the batch, or does nothing when this exact batch was already issued (a retry of the
/// same request). The same request id with other parameters is refused.
pub fn issue(state: &Batch, request: &pb::BatchIssued) -> Result<Vec<ActivationEvent>, Rejection> {
    validate(request)?;
    match &state.issued {
        None => Ok(vec![ActivationEvent::BatchIssued(request.clone())]),
        Some(issued) if issued == request => Ok(vec![]),
        Some(_) => Err(Rejection::AlreadyExists(
            "this request_id already issued a batch with other parameters; use a new request_id"
                .into(),
        )),
    }
}

fn validate(request: &pb::BatchIssued) -> Result<(), Rejection> {
    let invalid = |m: &str| Err(Rejection::Invalid(m.to_owned()));
    if request.sku.trim().is_empty() || request.sku.len() > 64 {
        return invalid("sku is required (at most 64 characters)");
    }
    if request.product_model.trim().is_empty() || request.product_model.len() > 128 {
        return invalid("product_model is required (at most 128 characters)");
    }
    if request.warranty_months == 0 || request.warranty_months > MAX_WARRANTY_MONTHS {
        return invalid("warranty_months must be between 1 and 240");
    }
    if request.quantity == 0 || request.quantity > MAX_QUANTITY {
        return invalid("quantity must be between 1 and 1000000");
    }
    if !is_valid_slug(&request.key_id, 16) {
        return invalid("key_id is required: 1-16 of a-z, 0-9, '-', '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::BatchIssued {
        pb::BatchIssued {
            batch_id: "b".into(),
            sku: "AC-100".into(),
            product_model: "Air Conditioner 100".into(),
            warranty_months: 24,
            quantity: 1000,
            key_id: "k1".into(),
        }
    }

    #[test]
    fn issuing_once_then_again_is_idempotent() {
        let mut batch = Batch::default();
        let events = issue(&batch, &request()).unwrap();
        assert_eq!(events.len(), 1);
        batch.apply(&events[0]);
        assert_eq!(issue(&batch, &request()).unwrap(), vec![]);
    }

    #[test]
    fn reusing_a_request_id_with_other_parameters_is_refused() {
        let mut batch = Batch::default();
        batch.apply(&issue(&batch, &request()).unwrap()[0]);
        let other = pb::BatchIssued {
            quantity: 5,
            ..request()
        };
        assert!(matches!(
            issue(&batch, &other),
            Err(Rejection::AlreadyExists(_))
        ));
    }

    #[test]
    fn bad_batches_are_refused() {
        let cases = [
            pb::BatchIssued {
                quantity: 0,
                ..request()
            },
            pb::BatchIssued {
                quantity: MAX_QUANTITY + 1,
                ..request()
            },
            pb::BatchIssued {
                warranty_months: 0,
                ..request()
            },
            pb::BatchIssued {
                sku: " ".into(),
                ..request()
            },
            pb::BatchIssued {
                product_model: String::new(),
                ..request()
            },
            pb::BatchIssued {
                key_id: "K1!".into(),
                ..request()
            },
        ];
        for case in cases {
            assert!(
                matches!(issue(&Batch::default(), &case), Err(Rejection::Invalid(_))),
                "{case:?}"
            );
        }
        let max = pb::BatchIssued {
            quantity: MAX_QUANTITY,
            ..request()
        };
        assert!(issue(&Batch::default(), &max).is_ok());
    }
}
