//! Who may call each membership RPC (the gate adds `platform` to every entry).

use scanloop_service::access::Role::{Auditor, Landing, MemberApp, Operator};
use scanloop_service::access::{AccessTable, rpc};

pub const ACCESS: AccessTable = &[
    // The activation page registers the buyer; the member app registers sign-ups of its own.
    rpc("RegisterMember", &[Landing, MemberApp]),
    rpc("LinkIdentity", &[MemberApp]),
    rpc("GetMember", &[MemberApp, Operator, Auditor]),
    // Points granted by the brand (campaigns, goodwill); members spend them in the app.
    rpc("AwardPoints", &[Operator]),
    rpc("RedeemPoints", &[MemberApp]),
    rpc("RecordEngagement", &[Landing, MemberApp]),
    rpc("ListLeaderboard", &[MemberApp, Operator, Auditor]),
    rpc("ListPointsLedger", &[MemberApp, Operator, Auditor]),
    rpc("ListTiers", &[MemberApp, Operator, Auditor]),
];
