#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The referral API at its edges: bad input on every RPC gets its status and a message that
//! says what to fix, and writes nothing; request ids make retries safe; a share card decodes to
//! the link's URL; a visitor's clicks count once a day.

mod common;

use common::*;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::referral::v1 as pb;
use scanloop_testkit::assert_request_id_reused;
use tonic::Code;

const UNKNOWN_TOKEN: &str = "AAAAAAAAAAAAAAAA";

fn unknown_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn create_link(request_id: &str, member_id: &str, sku: &str) -> pb::CreateLinkRequest {
    pb::CreateLinkRequest {
        brand_id: BRAND.into(),
        request_id: request_id.into(),
        member_id: member_id.into(),
        sku: sku.into(),
        campaign_id: String::new(),
    }
}

fn share(
    request_id: &str,
    member_id: &str,
    token: &str,
    channel: pb::ShareChannel,
) -> pb::RecordShareRequest {
    pb::RecordShareRequest {
        brand_id: BRAND.into(),
        request_id: request_id.into(),
        member_id: member_id.into(),
        token: token.into(),
        channel: channel as i32,
    }
}

fn revoke(request_id: &str, token: &str, reason: &str) -> pb::RevokeLinkRequest {
    pb::RevokeLinkRequest {
        brand_id: BRAND.into(),
        request_id: request_id.into(),
        token: token.into(),
        reason: reason.into(),
    }
}

fn campaign(id: &str, goal: u32, window: u32, months: u32) -> pb::DefineCampaignRequest {
    pb::DefineCampaignRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        campaign_id: id.into(),
        name: "three friends".into(),
        goal_friends: goal,
        window_days: window,
        extension_months: months,
    }
}

fn review(attribution_id: &str, decision: i32, reviewer: &str) -> pb::ReviewReferralRequest {
    pb::ReviewReferralRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        attribution_id: attribution_id.into(),
        decision,
        reviewer: reviewer.into(),
        note: String::new(),
    }
}

fn resolve(token: &str, visitor_key: &str, channel: i32) -> pb::ResolveLinkRequest {
    pb::ResolveLinkRequest {
        brand_id: BRAND.into(),
        token: token.into(),
        visitor: None,
        visitor_key: visitor_key.into(),
        channel,
    }
}

async fn stats(cluster: &Cluster, member_id: &str) -> pb::FunnelFigures {
    cluster
        .referral
        .clone()
        .get_stats(pb::GetStatsRequest {
            brand_id: BRAND.into(),
            member_id: member_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .total
        .unwrap()
}

/// Decodes the card's PNG with a standard QR decoder (rqrr): the text in the code.
fn decode_qr(png_bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (width, height) = (info.width as usize, info.height as usize);
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| pixels[y * width + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code on the card");
    grids[0].decode().unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_on_every_rpc_is_refused_with_its_status_and_writes_nothing() {
    let mut cluster = Cluster::start("api_bad").await;
    let codes = cluster.issue(BRAND, 2).await;
    let a_warranty = cluster
        .activate(activation(BRAND, &codes[0], "13300000001", "SN-A", ""))
        .await;
    let b_warranty = cluster
        .activate(activation(BRAND, &codes[1], "13300000002", "SN-B", ""))
        .await;
    let a = cluster.member_of(BRAND, "13300000001").await.member_id;
    let b = cluster.member_of(BRAND, "13300000002").await.member_id;
    let mut api = cluster.referral.clone();
    let ref_of = |w: &scanloop_proto::activation::v1::Warranty| pb::WarrantyRef {
        batch_id: w.batch_id.clone(),
        serial: w.serial,
    };

    // DefineCampaign: terms out of range are refused, and the campaign stays undefined.
    for (request, says) in [
        (
            campaign("bad-terms", 0, 30, 12),
            "goal_friends must be 1..=100",
        ),
        (
            campaign("bad-terms", 3, 400, 12),
            "window_days must be 1..=365",
        ),
        (
            campaign("bad-terms", 3, 30, 0),
            "extension_months must be 1..=60",
        ),
        (campaign("Bad Terms", 3, 30, 12), "campaign_id must be"),
        (campaign("", 3, 30, 12), "campaign_id must be"),
        (
            pb::DefineCampaignRequest {
                request_id: String::new(),
                ..campaign("bad-terms", 3, 30, 12)
            },
            "request_id is required",
        ),
        (
            pb::DefineCampaignRequest {
                brand_id: String::new(),
                ..campaign("bad-terms", 3, 30, 12)
            },
            "brand_id is required",
        ),
    ] {
        assert_refused(
            api.define_campaign(request).await,
            Code::InvalidArgument,
            says,
        );
    }
    api.define_campaign(campaign("three-friends", 3, 30, 12))
        .await
        .unwrap();

    // StartAssist. Referral learns of A and A's warranty from the topics: A's own start is the
    // signal that it has.
    let start =
        |member: &str, campaign: &str, warranty: Option<pb::WarrantyRef>| pb::StartAssistRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            member_id: member.into(),
            campaign_id: campaign.into(),
            warranty,
        };
    let first = start(&a, "three-friends", Some(ref_of(&a_warranty)));
    let assist = eventually(
        || {
            let mut api = api.clone();
            let first = first.clone();
            async move { api.start_assist(first).await }
        },
        Result::is_ok,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!((assist.progress, assist.goal), (0, 3));
    assert_refused(
        api.start_assist(start(&a, "three-friends", Some(ref_of(&a_warranty))))
            .await,
        Code::AlreadyExists,
        "already has an assist in campaign three-friends",
    );
    assert_refused(
        api.start_assist(start(&a, "three-friends", Some(ref_of(&b_warranty))))
            .await,
        Code::FailedPrecondition,
        "activated by someone else",
    );
    assert_refused(
        api.start_assist(start(&a, "three-friends", None)).await,
        Code::InvalidArgument,
        "warranty is required",
    );
    assert_refused(
        api.start_assist(start(
            &a,
            "three-friends",
            Some(pb::WarrantyRef {
                batch_id: "batch-1".into(),
                serial: 1,
            }),
        ))
        .await,
        Code::InvalidArgument,
        "warranty.batch_id must be a batch UUID",
    );
    assert_refused(
        api.start_assist(start(
            &a,
            "three-friends",
            Some(pb::WarrantyRef {
                batch_id: unknown_uuid(),
                serial: 1,
            }),
        ))
        .await,
        Code::NotFound,
        "no activated warranty",
    );
    assert_refused(
        api.start_assist(start(&a, "bad-terms", Some(ref_of(&a_warranty))))
            .await,
        Code::NotFound,
        "no campaign bad-terms",
    );
    assert_refused(
        api.start_assist(start(&unknown_uuid(), "three-friends", None))
            .await,
        Code::InvalidArgument,
        "warranty is required",
    );
    assert_refused(
        api.start_assist(start(
            &unknown_uuid(),
            "three-friends",
            Some(ref_of(&a_warranty)),
        ))
        .await,
        Code::NotFound,
        "no member",
    );
    assert_refused(
        api.start_assist(start(
            "member-a",
            "three-friends",
            Some(ref_of(&a_warranty)),
        ))
        .await,
        Code::InvalidArgument,
        "member_id must be a member's UUID",
    );
    // B, once referral knows B, may not bind A's warranty either.
    let b_on_a = start(&b, "three-friends", Some(ref_of(&a_warranty)));
    let refused = eventually(
        || {
            let mut api = api.clone();
            let b_on_a = b_on_a.clone();
            async move { api.start_assist(b_on_a).await }
        },
        |r| !matches!(r, Err(s) if s.code() == Code::NotFound),
    )
    .await;
    assert_refused(
        refused,
        Code::FailedPrecondition,
        "activated by someone else",
    );

    // GetAssist: B has none; A's is there.
    assert_refused(
        api.get_assist(pb::GetAssistRequest {
            brand_id: BRAND.into(),
            member_id: b.clone(),
            campaign_id: "three-friends".into(),
        })
        .await,
        Code::NotFound,
        "has no assist in campaign three-friends",
    );
    assert_refused(
        api.get_assist(pb::GetAssistRequest {
            brand_id: BRAND.into(),
            member_id: a.clone(),
            campaign_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "campaign_id must be",
    );

    // CreateLink.
    for (request, code, says) in [
        (
            pb::CreateLinkRequest {
                brand_id: String::new(),
                ..create_link(&request_id(), &a, "PH-9")
            },
            Code::InvalidArgument,
            "brand_id is required",
        ),
        (
            pb::CreateLinkRequest {
                brand_id: "Acme!".into(),
                ..create_link(&request_id(), &a, "PH-9")
            },
            Code::InvalidArgument,
            "brand_id is required: 1-64 of a-z",
        ),
        (
            create_link("", &a, "PH-9"),
            Code::InvalidArgument,
            "request_id is required",
        ),
        (
            create_link(&request_id(), "member-a", "PH-9"),
            Code::InvalidArgument,
            "member_id must be a member's UUID",
        ),
        (
            create_link(&request_id(), &unknown_uuid(), "PH-9"),
            Code::NotFound,
            "no member",
        ),
        (
            create_link(&request_id(), &a, &"x".repeat(65)),
            Code::InvalidArgument,
            "sku must be at most 64 characters",
        ),
        (
            pb::CreateLinkRequest {
                campaign_id: "Three Friends".into(),
                ..create_link(&request_id(), &a, "PH-9")
            },
            Code::InvalidArgument,
            "campaign_id must be 1-64 of a-z",
        ),
        (
            pb::CreateLinkRequest {
                campaign_id: "bad-terms".into(),
                ..create_link(&request_id(), &a, "PH-9")
            },
            Code::NotFound,
            "no campaign bad-terms",
        ),
    ] {
        assert_refused(api.create_link(request).await, code, says);
    }
    let link = api
        .create_link(create_link(&request_id(), &a, "PH-9"))
        .await
        .unwrap()
        .into_inner();

    // ListLinks, once referral's projections have handled everything on the referral topic:
    // only the one link created.
    wait_consumed(&cluster.projection_group(), &cluster.referral_topic).await;
    let links = api
        .list_links(pb::ListLinksRequest {
            brand_id: BRAND.into(),
            member_id: a.clone(),
            page: Some(PageRequest::default()),
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(
        links.iter().map(|l| l.token.as_str()).collect::<Vec<_>>(),
        vec![link.token.as_str()]
    );
    assert_refused(
        api.list_links(pb::ListLinksRequest {
            brand_id: BRAND.into(),
            member_id: "member-a".into(),
            page: None,
        })
        .await,
        Code::InvalidArgument,
        "member_id must be a member's UUID",
    );
    assert_refused(
        api.list_links(pb::ListLinksRequest {
            brand_id: BRAND.into(),
            member_id: a.clone(),
            page: Some(PageRequest {
                page_size: 10,
                page_token: "not a page token!".into(),
            }),
        })
        .await,
        Code::InvalidArgument,
        "page_token is not one this service issued",
    );

    // RecordShare: every refusal leaves the link's shares at 0, so the first good share makes 1.
    for (request, code, says) in [
        (
            share("", &a, &link.token, pb::ShareChannel::WechatChat),
            Code::InvalidArgument,
            "request_id is required",
        ),
        (
            share(
                &request_id(),
                "a",
                &link.token,
                pb::ShareChannel::WechatChat,
            ),
            Code::InvalidArgument,
            "member_id must be a member's UUID",
        ),
        (
            share(&request_id(), &a, "short", pb::ShareChannel::WechatChat),
            Code::InvalidArgument,
            "token must be a link token",
        ),
        (
            share(
                &request_id(),
                &a,
                &link.token,
                pb::ShareChannel::Unspecified,
            ),
            Code::InvalidArgument,
            "channel must be WECHAT_CHAT, WECHAT_MOMENTS, WECHAT_GROUP or OTHER",
        ),
        (
            share(&request_id(), &b, &link.token, pb::ShareChannel::WechatChat),
            Code::FailedPrecondition,
            "this link belongs to another member",
        ),
        (
            share(
                &request_id(),
                &a,
                UNKNOWN_TOKEN,
                pb::ShareChannel::WechatChat,
            ),
            Code::NotFound,
            "no such link",
        ),
    ] {
        assert_refused(api.record_share(request).await, code, says);
    }
    let shared = api
        .record_share(share(
            &request_id(),
            &a,
            &link.token,
            pb::ShareChannel::WechatGroup,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.shares, 1);

    // RevokeLink: nothing refused revokes; the link still renders and resolves below.
    for (request, code, says) in [
        (
            revoke("", &link.token, "lost phone"),
            Code::InvalidArgument,
            "request_id is required",
        ),
        (
            revoke(&request_id(), "not/a/token", "lost phone"),
            Code::InvalidArgument,
            "token must be a link token",
        ),
        (
            revoke(&request_id(), UNKNOWN_TOKEN, "lost phone"),
            Code::NotFound,
            "no such link",
        ),
        (
            revoke(&request_id(), &link.token, &"r".repeat(501)),
            Code::InvalidArgument,
            "reason must be at most 500 characters",
        ),
    ] {
        assert_refused(api.revoke_link(request).await, code, says);
    }

    // RenderCard.
    let card = |token: &str, size_px: u32| pb::RenderCardRequest {
        brand_id: BRAND.into(),
        token: token.into(),
        size_px,
    };
    assert_refused(
        api.render_card(card(&link.token, 64)).await,
        Code::InvalidArgument,
        "size_px 64 is out of range: size_px must be 128..=2048",
    );
    assert_refused(
        api.render_card(card(&link.token, 4096)).await,
        Code::InvalidArgument,
        "size_px must be 128..=2048",
    );
    assert_refused(
        api.render_card(card("short", 0)).await,
        Code::InvalidArgument,
        "token must be a link token",
    );
    assert_refused(
        api.render_card(card(UNKNOWN_TOKEN, 0)).await,
        Code::NotFound,
        "no link with token",
    );
    assert_refused(
        api.render_card(pb::RenderCardRequest {
            brand_id: String::new(),
            ..card(&link.token, 0)
        })
        .await,
        Code::InvalidArgument,
        "brand_id is required",
    );
    assert!(
        !api.render_card(card(&link.token, 0))
            .await
            .unwrap()
            .into_inner()
            .png
            .is_empty(),
        "the link was not revoked by any refused call"
    );

    // ResolveLink: refusals record no click; the one good visit is the only click.
    for (request, code, says) in [
        (
            resolve("short", "cookie-1", 0),
            Code::InvalidArgument,
            "token must be a link token",
        ),
        (
            resolve(UNKNOWN_TOKEN, "cookie-1", 0),
            Code::NotFound,
            "no link with token",
        ),
        (
            resolve(&link.token, "cookie-1", 99),
            Code::InvalidArgument,
            "channel must be",
        ),
        (
            resolve(&link.token, "cookie\u{7}", 0),
            Code::InvalidArgument,
            "visitor_key must be at most 128 characters without control characters",
        ),
    ] {
        assert_refused(api.resolve_link(request).await, code, says);
    }
    let landing = api
        .resolve_link(resolve(
            &link.token,
            "cookie-1",
            pb::ShareChannel::WechatGroup as i32,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(landing.active && landing.counted);
    let figures = stats(&cluster, &a).await;
    assert_eq!((figures.clicks, figures.unique_visitors), (1, 1));

    // ReviewReferral.
    let approve = pb::ReviewDecision::Approve as i32;
    for (request, code, says) in [
        (
            pb::ReviewReferralRequest {
                request_id: String::new(),
                ..review(&unknown_uuid(), approve, "ops-li")
            },
            Code::InvalidArgument,
            "request_id is required",
        ),
        (
            review("referral-1", approve, "ops-li"),
            Code::InvalidArgument,
            "attribution_id must be a UUID from ListHeld",
        ),
        (
            review(&unknown_uuid(), 0, "ops-li"),
            Code::InvalidArgument,
            "decision must be APPROVE or REJECT",
        ),
        (
            review(&unknown_uuid(), 7, "ops-li"),
            Code::InvalidArgument,
            "decision must be APPROVE or REJECT",
        ),
        (
            review(&unknown_uuid(), approve, "  "),
            Code::InvalidArgument,
            "reviewer is required",
        ),
        (
            review(&unknown_uuid(), approve, "ops-li"),
            Code::NotFound,
            "no attribution",
        ),
    ] {
        assert_refused(api.review_referral(request).await, code, says);
    }

    // The reads.
    assert_refused(
        api.list_held(pb::ListHeldRequest {
            brand_id: "ACME".into(),
            page: None,
        })
        .await,
        Code::InvalidArgument,
        "brand_id is required",
    );
    assert_refused(
        api.get_tree(pb::GetTreeRequest {
            brand_id: BRAND.into(),
            member_id: "a".into(),
            page: None,
        })
        .await,
        Code::InvalidArgument,
        "member_id must be a member's UUID",
    );
    assert_refused(
        api.list_referrals(pb::ListReferralsRequest {
            brand_id: BRAND.into(),
            referrer_member_id: String::new(),
            page: None,
        })
        .await,
        Code::InvalidArgument,
        "member_id must be a member's UUID",
    );
    assert_refused(
        api.get_stats(pb::GetStatsRequest {
            brand_id: BRAND.into(),
            member_id: "a".into(),
        })
        .await,
        Code::InvalidArgument,
        "member_id must be a member's UUID",
    );
    // A well-formed id of nobody: NOT_FOUND, not an empty tree or zero figures.
    assert_refused(
        api.get_tree(pb::GetTreeRequest {
            brand_id: BRAND.into(),
            member_id: unknown_uuid(),
            page: None,
        })
        .await,
        Code::NotFound,
        "no member",
    );
    assert_refused(
        api.get_stats(pb::GetStatsRequest {
            brand_id: BRAND.into(),
            member_id: unknown_uuid(),
        })
        .await,
        Code::NotFound,
        "no member",
    );
    assert_refused(
        api.get_store_stats(pb::GetStoreStatsRequest {
            brand_id: BRAND.into(),
            store_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "store_id is required",
    );
    assert_refused(
        api.get_store_stats(pb::GetStoreStatsRequest {
            brand_id: String::new(),
            store_id: "store-1".into(),
        })
        .await,
        Code::InvalidArgument,
        "brand_id is required",
    );

    // Nothing refused appended an event: the referral topic holds exactly what the accepted
    // calls wrote (published in the background: read once all of it has arrived).
    assert_eq!(
        count_by_type(&published(&cluster.referral_topic, 4).await),
        counts(&[
            ("CampaignDefined", 1),
            ("AssistStarted", 1),
            ("LinkCreated", 1),
            ("LinkShared", 1),
        ])
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_request_id_gets_the_first_answer_and_another_request_under_it_is_refused() {
    let mut cluster = Cluster::start("api_ids").await;
    let codes = cluster.issue(BRAND, 1).await;
    cluster
        .activate(activation(BRAND, &codes[0], "13300000011", "SN-A", ""))
        .await;
    let a = cluster.member_of(BRAND, "13300000011").await.member_id;
    let mut api = cluster.referral.clone();

    // CreateLink: the first call succeeds once referral knows A; a repeat answers the same link.
    let create_id = request_id();
    let first = eventually(
        || {
            let mut api = api.clone();
            let request = create_link(&create_id, &a, "PH-9");
            async move { api.create_link(request).await }
        },
        Result::is_ok,
    )
    .await
    .unwrap()
    .into_inner();
    let again = api
        .create_link(create_link(&create_id, &a, "PH-9"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_request_id_reused(api.create_link(create_link(&create_id, &a, "PH-10")).await);

    // RecordShare: a repeat counts once; another channel under the same id is refused.
    let share_id = request_id();
    let shared = api
        .record_share(share(
            &share_id,
            &a,
            &first.token,
            pb::ShareChannel::WechatChat,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.shares, 1);
    let repeated = api
        .record_share(share(
            &share_id,
            &a,
            &first.token,
            pb::ShareChannel::WechatChat,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, shared);
    assert_request_id_reused(
        api.record_share(share(
            &share_id,
            &a,
            &first.token,
            pb::ShareChannel::WechatMoments,
        ))
        .await,
    );
    // The share's id for a new link is refused too (the id names one command, brand-wide).
    assert_request_id_reused(api.create_link(create_link(&share_id, &a, "PH-9")).await);
    let second = api
        .record_share(share(
            &request_id(),
            &a,
            &first.token,
            pb::ShareChannel::WechatMoments,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.shares, 2,
        "the repeat and the refusal counted nothing"
    );

    // RevokeLink: a repeat answers the revoked link; another reason under the same id is
    // refused.
    let revoke_id = request_id();
    let revoked = api
        .revoke_link(revoke(&revoke_id, &first.token, "lost phone"))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    let repeated = api
        .revoke_link(revoke(&revoke_id, &first.token, "lost phone"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, revoked);
    assert_request_id_reused(
        api.revoke_link(revoke(&revoke_id, &first.token, "changed my mind"))
            .await,
    );

    // Exactly the accepted commands' events: one link, two shares, one revocation (published
    // in the background: read once all four have arrived).
    assert_eq!(
        count_by_type(&published(&cluster.referral_topic, 4).await),
        counts(&[("LinkCreated", 1), ("LinkShared", 2), ("LinkRevoked", 1)])
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_card_decodes_to_the_link_url_and_a_visitor_counts_once_a_day() {
    let mut cluster = Cluster::start("api_card").await;
    let codes = cluster.issue(BRAND, 1).await;
    cluster
        .activate(activation(BRAND, &codes[0], "13300000021", "SN-A", ""))
        .await;
    let a = cluster.member_of(BRAND, "13300000021").await.member_id;
    let link = cluster.link_for(BRAND, &a, "").await;
    let mut api = cluster.referral.clone();

    // The share card: the PNG's QR code reads back as the link's URL, exactly, at the default
    // size and at the smallest.
    for size_px in [0, 128] {
        let card = api
            .render_card(pb::RenderCardRequest {
                brand_id: BRAND.into(),
                token: link.token.clone(),
                size_px,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(card.url, link.url);
        assert_eq!(decode_qr(&card.png), link.url, "size_px {size_px}");
        assert!(card.svg.contains("<svg"), "{}", card.svg);
    }

    // One visitor: counted, not counted again within 24 hours, counted again after them.
    let visit = || {
        resolve(
            &link.token,
            "cookie-42",
            pb::ShareChannel::WechatChat as i32,
        )
    };
    let counted = |landing: pb::LinkLanding| {
        assert!(landing.active);
        assert_eq!(landing.sku, "PH-9");
        landing.counted
    };
    assert!(counted(
        api.resolve_link(visit()).await.unwrap().into_inner()
    ));
    assert!(!counted(
        api.resolve_link(visit()).await.unwrap().into_inner()
    ));
    cluster.clock.advance(chrono::Duration::hours(25));
    assert!(counted(
        api.resolve_link(visit()).await.unwrap().into_inner()
    ));

    // Two counted clicks by one unique visitor.
    let figures = stats(&cluster, &a).await;
    assert_eq!((figures.clicks, figures.unique_visitors), (2, 1));
    cluster.stop().await;
}
