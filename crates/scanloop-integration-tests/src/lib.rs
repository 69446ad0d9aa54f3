//! Integration tests live in `tests/`; they need the devstack (`deploy/devstack/devstack up`).
