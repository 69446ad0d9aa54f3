//! Who may call each activation RPC (the gate adds `platform` to every entry). Public RPCs are
//! the ones a buyer's scan reaches; they also spend the abuse limits.

use scanloop_service::access::Role::{Auditor, Landing, MemberApp, Operator};
use scanloop_service::access::{AccessTable, public, rpc};

pub const ACCESS: AccessTable = &[
    rpc("IssueBatch", &[Operator]),
    public("VerifyCode", &[Landing]),
    public("ScanCode", &[Landing]),
    public("ActivateWarranty", &[Landing]),
    // After-sales: customer service extends, voids and refunds.
    rpc("ExtendWarranty", &[Operator]),
    rpc("VoidWarranty", &[Operator]),
    rpc("RefundPurchase", &[Operator]),
    rpc("GetWarranty", &[Landing, MemberApp, Operator, Auditor]),
    rpc("ListWarranties", &[MemberApp, Operator, Auditor]),
];
