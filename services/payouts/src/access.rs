//! Who may call each payouts RPC (the gate adds `platform` to every entry). Money moves only
//! for `finance` (settling, paying) and `operator` (the plans that price commissions).

use scanloop_service::access::Role::{Auditor, Finance, MemberApp, Operator};
use scanloop_service::access::{AccessTable, rpc};

pub const ACCESS: AccessTable = &[
    rpc("UpsertPlan", &[Operator]),
    rpc("GetPlan", &[MemberApp, Operator, Finance, Auditor]),
    // A member's own earnings, shown in the member app.
    rpc("GetAccount", &[MemberApp, Finance, Auditor]),
    rpc("ListCommissions", &[MemberApp, Finance, Auditor]),
    rpc("RunSettlement", &[Finance]),
    rpc("MarkPaid", &[Finance]),
    // `scanloop payouts export` reads a batch through GetSettlement.
    rpc("GetSettlement", &[Finance, Auditor]),
    rpc("ListSettlements", &[Finance, Auditor]),
    rpc("GetStatement", &[MemberApp, Finance, Auditor]),
    rpc("CheckLedger", &[Finance, Auditor]),
    rpc("ListReceivables", &[Finance, Auditor]),
    // Giving up money owed is finance's decision alone (the event names who made it).
    rpc("WriteOffReceivable", &[Finance]),
];
