//! Share cards.
