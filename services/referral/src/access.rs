//! Who may call each referral RPC (the gate adds `platform` to every entry). ResolveLink is what
//! a friend's tap on a shared link reaches: public, so it spends the abuse limits.

use scanloop_service::access::Role::{Auditor, Landing, MemberApp, Operator, Reviewer};
use scanloop_service::access::{AccessTable, public, rpc};

pub const ACCESS: AccessTable = &[
    rpc("CreateLink", &[MemberApp]),
    rpc("RenderCard", &[MemberApp]),
    public("ResolveLink", &[Landing]),
    rpc("RecordShare", &[Landing, MemberApp]),
    rpc("RevokeLink", &[MemberApp, Operator]),
    rpc("ListLinks", &[MemberApp, Operator, Auditor]),
    // Fraud review decides whether a held referral counts (and so whether it is paid).
    rpc("ListHeld", &[Reviewer, Auditor]),
    rpc("ReviewReferral", &[Reviewer]),
    rpc("DefineCampaign", &[Operator]),
    rpc("StartAssist", &[MemberApp]),
    rpc("GetAssist", &[Landing, MemberApp, Operator, Auditor]),
    rpc("GetTree", &[MemberApp, Operator, Reviewer, Auditor]),
    rpc("ListReferrals", &[MemberApp, Operator, Reviewer, Auditor]),
    rpc("GetStats", &[MemberApp, Operator, Auditor]),
    rpc("GetStoreStats", &[Operator, Auditor]),
];
