//! The client against the embedded ledger's HTTP API (`refsync_ledger::http::router`) over real
//! loopback HTTP: the same suite on a SQLite file in a temporary directory and on PostgreSQL
//! (a fresh schema per test) when `REFSYNC_TEST_POSTGRES_URL` is set. Without it the Postgres
//! tests fail when `CI` is set and are skipped, with a reason on stderr, otherwise.

use std::collections::BTreeSet;

use refsync_core::{
    ErrorKind, NewUser, QualifyAction, QualifyCall, QualifyOutcome, ReferralKey, ReferralPlatform,
    ReferrerRef, RewardStatus,
};
use refsync_ledger::http::{HttpOptions, router};
use refsync_ledger::{Backend, Ledger, Metric, NewCampaign, NewRewardRule, Recipient, Trigger};
use refsync_referral_factory::{
    ApiVersion, Config, CreateUser, Direction, FilterOp, ListQuery, ReferralFactory, RewardItem,
    RewardMetric, RewardView, User, WebhookKey,
};

const API_TOKEN: &str = "ledger-api-token-0123456789";
const HOOK_TOKEN: &str = "ledger-hook-token-0123456789";
use refsync_testkit::services::PgSchema;

// ---- databases ----------------------------------------------------------------------------------

/// A throwaway database: a SQLite file in a temporary directory, or a PostgreSQL schema that is
/// dropped on drop.
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgSchema>,
}

fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    TestDb {
        url,
        _dir: Some(dir),
        pg: None,
    }
}

async fn postgres_db() -> Option<TestDb> {
    let schema = PgSchema::create(
        "rf",
        "the Referral Factory client's PostgreSQL integration suite",
    )
    .await?;
    Some(TestDb {
        url: schema.url().to_owned(),
        _dir: None,
        pg: Some(schema),
    })
}

// ---- the served ledger --------------------------------------------------------------------------

/// The ledger's HTTP API on 127.0.0.1 (an ephemeral port).
struct Served {
    base: String,
    ledger: Ledger,
    server: tokio::task::JoinHandle<()>,
    _db: TestDb,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(db: TestDb) -> Served {
    let ledger = Ledger::open(&db.url).await.expect("open the ledger");
    let expected = if db.pg.is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    assert_eq!(ledger.backend(), expected);
    let app = router(
        ledger.clone(),
        HttpOptions::new(API_TOKEN).with_webhook_token(HOOK_TOKEN),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve the ledger");
    });
    Served {
        base: format!("http://{addr}"),
        ledger,
        server,
        _db: db,
    }
}

impl Served {
    fn client(&self, version: ApiVersion) -> ReferralFactory {
        let path = match version {
            ApiVersion::V2 => "api/v2",
            ApiVersion::V1 => "api/v1",
        };
        let mut cfg = Config::new(API_TOKEN).with_base_url(format!("{}/{path}", self.base));
        cfg.api_version = version;
        cfg.inbound_webhook_url =
            Some(format!("{}/webhook/{HOOK_TOKEN}/qualify", self.base).into());
        ReferralFactory::new(cfg).expect("client")
    }

    async fn campaign(&self, name: &str) -> String {
        let c = self
            .ledger
            .create_campaign(&NewCampaign {
                name: name.into(),
                link_base_url: Some("https://refer.example.com/r".into()),
            })
            .await
            .expect("campaign");
        self.ledger
            .add_reward_rule(
                c.id,
                &NewRewardRule {
                    recipient: Recipient::Referrer,
                    trigger: Trigger::WhenQualified,
                    metric: Metric::Amount,
                    value: "1000".into(),
                    cap_per_referrer: None,
                },
            )
            .await
            .expect("reward rule");
        c.id.to_string()
    }
}

fn call(action: QualifyAction, referral: ReferralKey) -> QualifyCall {
    QualifyCall {
        action,
        campaign: None,
        referral,
        rule: "deal_won".into(),
        reason: "deal won".into(),
    }
}

fn code(u: &User) -> String {
    u.code.clone().expect("a code")
}

fn referral_of(r: &RewardItem) -> String {
    r.extra
        .get("referral_id")
        .map(|v| v.to_string().trim_matches('"').to_owned())
        .unwrap_or_default()
}

// ---- the v2 suite -------------------------------------------------------------------------------

async fn v2_suite(db: TestDb) {
    let s = serve(db).await;
    let cid = s.campaign("Friends").await;
    let other = s.campaign("Other").await;
    let coupons: Vec<String> = (1..=8).map(|i| format!("CPN-{i}")).collect();
    s.ledger
        .add_coupons(cid.parse().unwrap(), &coupons)
        .await
        .expect("coupons");
    let c = s.client(ApiVersion::V2);
    let p: &dyn ReferralPlatform = &c;

    // -- create a referrer, then people invited by code, email and id --------------------------
    let ann = c
        .add_user(&CreateUser::new(&cid, "Ann", "ann@example.com"))
        .await
        .unwrap();
    assert_eq!(ann.user_type.as_deref(), Some("person_referring"));
    assert_eq!(ann.referrer_id, None);
    let ann_code = code(&ann);
    let bob = c
        .add_user(
            &CreateUser::new(&cid, "Bob", "bob@example.com")
                .referrer(ReferrerRef::Code(ann_code.clone()))
                .meta("company", "Acme"),
        )
        .await
        .unwrap();
    let cat = c
        .add_user(
            &CreateUser::new(&cid, "Cat", "cat@example.com")
                .referrer(ReferrerRef::Email("ANN@example.com".into())),
        )
        .await
        .unwrap();
    let dan = c
        .add_user(
            &CreateUser::new(&cid, "Dan", "dan@example.com")
                .referrer(ReferrerRef::Id(ann.id.clone())),
        )
        .await
        .unwrap();
    let eve = c
        .add_user(
            &CreateUser::new(&cid, "Eve", "eve@example.com")
                .referrer(ReferrerRef::Code(ann_code.to_lowercase())),
        )
        .await
        .unwrap();
    // Through the trait, as the engine does.
    let fay = p
        .create_user(&NewUser {
            campaign_id: cid.clone(),
            first_name: "Fay".into(),
            email: "fay@example.com".into(),
            referrer: Some(ReferrerRef::Code(ann_code.clone())),
            meta: Default::default(),
            notify: false,
        })
        .await
        .unwrap();
    let fay = c
        .find_user(&ReferralKey::Id { id: fay.id })
        .await
        .unwrap()
        .unwrap();
    let gus = c
        .add_user(
            &CreateUser::new(&cid, "Gus", "gus@example.com")
                .referrer(ReferrerRef::Code(ann_code.clone())),
        )
        .await
        .unwrap();
    let invited = [&bob, &cat, &dan, &eve, &fay, &gus];
    for u in invited {
        assert_eq!(u.referrer_id.as_deref(), Some(ann.id.as_str()), "{u:?}");
        assert_eq!(u.user_type.as_deref(), Some("person_invited"));
        assert_eq!(u.campaign_id.as_deref(), Some(cid.as_str()));
        assert!(
            u.url
                .as_deref()
                .unwrap()
                .starts_with("https://refer.example.com/r/")
        );
        assert!(
            u.coupon.is_some(),
            "invited users get a coupon from the pool"
        );
        assert!(u.qualified_at.is_none());
    }
    assert_eq!(bob.meta("company"), Some("Acme"));

    // -- creation errors ---------------------------------------------------------------------
    let e = c
        .add_user(
            &CreateUser::new(&cid, "Bobby", "Bob@Example.com")
                .referrer(ReferrerRef::Code(ann_code.clone())),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Conflict, "{e}");
    assert!(!e.is_retryable());
    assert_eq!(
        e.message(),
        format!(
            "email already exists in campaign {cid}: Referral Factory keeps the first referrer; not retried"
        )
    );
    let e = c
        .add_user(&CreateUser::new(&cid, "X", "not-an-email"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation);
    assert!(
        e.message()
            .contains("email: The email must be a valid email address."),
        "{e}"
    );
    let e = c
        .add_user(
            &CreateUser::new(&cid, "Ann again", "Ann+second@example.com")
                .referrer(ReferrerRef::Code(ann_code.clone())),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation, "self-referral: {e}");
    assert!(e.message().contains("Self-referral"), "{e}");
    let e = c
        .add_user(
            &CreateUser::new(&cid, "Hal", "hal@example.com")
                .referrer(ReferrerRef::Code("NOPE0000".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation, "unknown referrer: {e}");
    // The same email in another campaign is another user.
    let bob_elsewhere = c
        .add_user(&CreateUser::new(&other, "Bob", "bob@example.com"))
        .await
        .unwrap();
    assert_ne!(bob_elsewhere.id, bob.id);

    // -- get by id, code, email ----------------------------------------------------------------
    let by_id = c
        .find_user(&ReferralKey::Id { id: bob.id.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id, bob);
    let by_code = p
        .get_user(&ReferralKey::Code { code: code(&bob) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_code.id, bob.id);
    let by_email = c
        .find_user(&ReferralKey::Email {
            email: "BOB@example.com".into(),
            campaign: cid.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.id, bob.id);
    let in_other = c
        .find_user(&ReferralKey::Email {
            email: "bob@example.com".into(),
            campaign: other.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_other.id, bob_elsewhere.id);
    let by_coupon = c
        .find_user(&ReferralKey::Coupon {
            coupon: eve.coupon.clone().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_coupon.id, eve.id);
    assert_eq!(
        p.get_user(&ReferralKey::Code {
            code: "NOPE0000".into()
        })
        .await
        .unwrap(),
        None
    );
    assert_eq!(
        c.find_user(&ReferralKey::Id {
            id: "999999".into()
        })
        .await
        .unwrap(),
        None
    );

    // -- list: filters, ordering, relations, fields, pagination via links.next -----------------
    let mut pages = c
        .list_users(
            &ListQuery::new()
                .campaign(&cid)
                .filter("type", FilterOp::Equal, "person_invited")
                .order_by("id", Direction::Desc)
                .with("referrer")
                .per_page(4),
        )
        .unwrap();
    let first = pages.next_page().await.unwrap().unwrap();
    assert_eq!(first.items.len(), 4);
    assert_eq!(first.meta.as_ref().unwrap().total, Some(6));
    assert!(first.next.is_some());
    let mut listed = first.items;
    while let Some(page) = pages.next_page().await.unwrap() {
        listed.extend(page.items);
    }
    assert_eq!(pages.pages_fetched(), 2);
    let ids: Vec<&str> = listed.iter().map(|u| u.id.as_str()).collect();
    let mut expected: Vec<&str> = invited.iter().map(|u| u.id.as_str()).collect();
    expected.reverse();
    assert_eq!(ids, expected);
    for u in &listed {
        assert_eq!(u.referrer.as_ref().unwrap().id, ann.id, "with=referrer");
    }
    let all_in_campaign = |q: ListQuery| {
        let c = c.clone();
        let cid = cid.clone();
        async move {
            c.list_users(&q.campaign(cid).per_page(2))
                .unwrap()
                .collect_all()
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.first_name.unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        all_in_campaign(
            ListQuery::new()
                .filter("email", FilterOp::Like, "%a%@example.com")
                .order_by("email", Direction::Asc)
        )
        .await,
        ["Ann", "Cat", "Dan", "Fay"]
    );
    assert_eq!(
        all_in_campaign(
            ListQuery::new()
                .filter("id", FilterOp::Gt, &ann.id)
                .filter("id", FilterOp::Lte, &dan.id)
                .order_by("id", Direction::Asc)
        )
        .await,
        ["Bob", "Cat", "Dan"]
    );
    assert_eq!(
        all_in_campaign(
            ListQuery::new()
                .filter("id", FilterOp::Lt, &cat.id)
                .order_by("id", Direction::Asc)
        )
        .await,
        ["Ann", "Bob"]
    );
    assert_eq!(
        all_in_campaign(
            ListQuery::new()
                .filter("id", FilterOp::Gte, &fay.id)
                .order_by("id", Direction::Desc)
        )
        .await,
        ["Gus", "Fay"]
    );
    let slim = c
        .list_users(&ListQuery::new().campaign(&cid).fields(["id", "email"]))
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(slim.len(), 7);
    assert!(slim.iter().all(|u| u.code.is_none() && u.email.is_some()));
    let e = c.list_users(&ListQuery::new().per_page(251)).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation);

    // -- qualify (by code, email, id, coupon), idempotently ------------------------------------
    let first_time = match p
        .qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Code { code: code(&bob) },
        ))
        .await
        .unwrap()
    {
        QualifyOutcome::Qualified { user: Some(u) } => u.qualified_at.expect("qualified_at"),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        p.qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Code { code: code(&bob) }
        ))
        .await
        .unwrap(),
        QualifyOutcome::AlreadyQualified {
            qualified_at: Some(first_time)
        }
    );
    let mut email_call = call(
        QualifyAction::Qualify,
        ReferralKey::Email {
            email: "Cat@Example.com".into(),
            campaign: cid.clone(),
        },
    );
    email_call.campaign = Some(cid.clone());
    assert!(matches!(
        p.qualify(&email_call).await.unwrap(),
        QualifyOutcome::Qualified { .. }
    ));
    assert!(matches!(
        p.qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Id { id: dan.id.clone() }
        ))
        .await
        .unwrap(),
        QualifyOutcome::Qualified { .. }
    ));
    let eve_coupon = ReferralKey::Coupon {
        coupon: eve.coupon.clone().unwrap(),
    };
    assert!(matches!(
        p.qualify(&call(QualifyAction::Qualify, eve_coupon.clone()))
            .await
            .unwrap(),
        QualifyOutcome::Qualified { .. }
    ));
    assert!(matches!(
        p.qualify(&call(QualifyAction::Qualify, eve_coupon))
            .await
            .unwrap(),
        QualifyOutcome::AlreadyQualified {
            qualified_at: Some(_)
        }
    ));
    // Unknown: a code is an error, a coupon is ignored; a referrer cannot qualify.
    let e = p
        .qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Code {
                code: "NOPE0000".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotFound);
    assert_eq!(
        p.qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Coupon {
                coupon: "SHOP-WIDE-10".into()
            }
        ))
        .await
        .unwrap(),
        QualifyOutcome::NotQualified
    );
    let e = p
        .qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Code {
                code: ann_code.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation, "{e}");

    // -- qualification through the inbound webhook (form body) ---------------------------------
    assert_eq!(
        c.qualify_via_webhook(&WebhookKey::Code(code(&fay)))
            .await
            .unwrap(),
        QualifyOutcome::Qualified { user: None }
    );
    assert_eq!(
        c.qualify_via_webhook(&WebhookKey::Code(code(&fay)))
            .await
            .unwrap(),
        QualifyOutcome::AlreadyQualified { qualified_at: None }
    );
    assert!(
        c.find_user(&ReferralKey::Id { id: fay.id.clone() })
            .await
            .unwrap()
            .unwrap()
            .qualified_at
            .is_some()
    );
    assert_eq!(
        c.qualify_via_webhook(&WebhookKey::Coupon(gus.coupon.clone().unwrap()))
            .await
            .unwrap(),
        QualifyOutcome::Qualified { user: None }
    );
    assert_eq!(
        c.qualify_via_webhook(&WebhookKey::Coupon("SHOP-WIDE-10".into()))
            .await
            .unwrap(),
        QualifyOutcome::NotQualified
    );
    let e = c
        .qualify_via_webhook(&WebhookKey::Code("NOPE0000".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotFound);

    // -- rewards due: one per qualified referral (Bob, Cat, Dan, Eve, Fay, Gus) ----------------
    let due = p.rewards_due().await.unwrap();
    assert_eq!(due.len(), 6, "{due:?}");
    for r in &due {
        assert_eq!(r.recipient_id, ann.id);
        assert_eq!(r.status, RewardStatus::Due);
        assert_eq!((r.metric.as_str(), r.amount), ("amount", Some(1000)));
    }
    let due_items = c
        .list_rewards(
            RewardView::Due,
            RewardMetric::Amount,
            &ListQuery::new().per_page(4),
        )
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(due_items.len(), 6);
    let reward_for = |u: &User| {
        due_items
            .iter()
            .find(|r| referral_of(r) == u.id)
            .unwrap_or_else(|| panic!("no reward for {}", u.id))
            .id
            .clone()
    };
    let (bob_reward, cat_reward) = (reward_for(&bob), reward_for(&cat));

    // -- issue, cancel, and their rules ---------------------------------------------------------
    let issued = p.issue_reward(&bob_reward).await.unwrap();
    assert_eq!(
        (issued.id.as_str(), issued.status),
        (bob_reward.as_str(), RewardStatus::Issued)
    );
    let e = p.issue_reward(&bob_reward).await.unwrap_err();
    assert!(e.message().contains("already issued"), "{e}");
    assert!(!e.is_retryable());
    let e = p.cancel_reward(&bob_reward).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation);
    assert!(e.message().contains("only due rewards"), "{e}");
    assert_eq!(
        p.cancel_reward(&cat_reward).await.unwrap().status,
        RewardStatus::Cancelled
    );
    assert!(p.issue_reward(&cat_reward).await.is_err());
    assert_eq!(
        p.issue_reward("999999").await.unwrap_err().kind(),
        &ErrorKind::NotFound
    );
    let issued_list = c
        .list_rewards(RewardView::Issued, RewardMetric::Amount, &ListQuery::new())
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        issued_list
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [bob_reward.as_str()]
    );
    assert!(issued_list[0].issued_at.is_some());
    let dashboard = c
        .list_rewards(
            RewardView::Dashboard,
            RewardMetric::Amount,
            &ListQuery::new(),
        )
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(dashboard.len(), 6);
    assert_eq!(p.rewards_due().await.unwrap().len(), 4);

    // -- unqualify ------------------------------------------------------------------------------
    assert_eq!(
        p.unqualify(&call(
            QualifyAction::Unqualify,
            ReferralKey::Id { id: bob.id.clone() }
        ))
        .await
        .unwrap(),
        QualifyOutcome::Unqualified
    );
    assert_eq!(
        p.unqualify(&call(
            QualifyAction::Unqualify,
            ReferralKey::Id { id: bob.id.clone() }
        ))
        .await
        .unwrap(),
        QualifyOutcome::NotQualified
    );
    assert!(
        c.find_user(&ReferralKey::Id { id: bob.id.clone() })
            .await
            .unwrap()
            .unwrap()
            .qualified_at
            .is_none()
    );
    // Dan's due reward goes with his qualification; Bob's issued one is never taken back.
    assert_eq!(
        p.unqualify(&call(
            QualifyAction::Unqualify,
            ReferralKey::Code { code: code(&dan) }
        ))
        .await
        .unwrap(),
        QualifyOutcome::Unqualified
    );
    let still_due: BTreeSet<String> = p
        .rewards_due()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let expected: BTreeSet<String> = [&eve, &fay, &gus].iter().map(|u| reward_for(u)).collect();
    assert_eq!(still_due, expected);
    let issued_after = c
        .list_rewards(RewardView::Issued, RewardMetric::Amount, &ListQuery::new())
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(issued_after.len(), 1);
    // Qualifying Bob again makes no second reward for him.
    assert!(matches!(
        p.qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Id { id: bob.id.clone() }
        ))
        .await
        .unwrap(),
        QualifyOutcome::Qualified { .. }
    ));
    assert_eq!(p.rewards_due().await.unwrap().len(), 3);

    // Nothing above came near the rate limit or tripped the breaker.
    assert!(matches!(
        c.breaker().state(),
        refsync_referral_factory::BreakerState::Closed { recent_429s: 0 }
    ));
}

// ---- the v1 suite -------------------------------------------------------------------------------

async fn v1_suite(db: TestDb) {
    let s = serve(db).await;
    let a = s.campaign("A").await;
    let b = s.campaign("B").await;
    let c = s.client(ApiVersion::V1);

    let ann = c
        .add_user(&CreateUser::new(&a, "Ann", "ann@example.com"))
        .await
        .unwrap();
    let zed = c
        .add_user(&CreateUser::new(&b, "Zed", "zed@example.com"))
        .await
        .unwrap();
    // v1 attributes by referrer_code; by id or email the client looks the code up first.
    let bob = c
        .add_user(
            &CreateUser::new(&a, "Bob", "bob@example.com").referrer(ReferrerRef::Code(code(&ann))),
        )
        .await
        .unwrap();
    let cat = c
        .add_user(
            &CreateUser::new(&a, "Cat", "cat@example.com")
                .referrer(ReferrerRef::Id(ann.id.clone())),
        )
        .await
        .unwrap();
    let dee = c
        .add_user(
            &CreateUser::new(&a, "Dee", "dee@example.com")
                .referrer(ReferrerRef::Email("ann@example.com".into())),
        )
        .await
        .unwrap();
    for u in [&bob, &cat, &dee] {
        assert_eq!(u.referrer_id.as_deref(), Some(ann.id.as_str()));
    }
    let e = c
        .add_user(
            &CreateUser::new(&a, "Bob", "bob@example.com").referrer(ReferrerRef::Code(code(&ann))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Conflict);

    // Get by id (GET /users/{id}), by code and email (found by listing).
    assert_eq!(
        c.find_user(&ReferralKey::Id { id: bob.id.clone() })
            .await
            .unwrap()
            .unwrap()
            .id,
        bob.id
    );
    assert_eq!(
        c.find_user(&ReferralKey::Code { code: code(&cat) })
            .await
            .unwrap()
            .unwrap()
            .id,
        cat.id
    );
    assert_eq!(
        c.find_user(&ReferralKey::Email {
            email: "dee@example.com".into(),
            campaign: a.clone()
        })
        .await
        .unwrap()
        .unwrap()
        .id,
        dee.id
    );
    assert_eq!(
        c.find_user(&ReferralKey::Email {
            email: "dee@example.com".into(),
            campaign: b.clone()
        })
        .await
        .unwrap(),
        None
    );

    // v1 ignores campaign_id: the client filters, across pages.
    let in_a = c
        .list_users(&ListQuery::new().campaign(&a).per_page(2))
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let names: BTreeSet<String> = in_a.into_iter().filter_map(|u| u.first_name).collect();
    assert_eq!(
        names,
        ["Ann", "Bob", "Cat", "Dee"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let in_b = c
        .list_users(&ListQuery::new().campaign(&b))
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        in_b.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        [zed.id.as_str()]
    );

    // Qualify: PUT /users/{id} {campaign_id, qualified}; idempotent; unqualify.
    let p: &dyn ReferralPlatform = &c;
    assert!(matches!(
        p.qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Code { code: code(&bob) }
        ))
        .await
        .unwrap(),
        QualifyOutcome::Qualified { user: Some(_) }
    ));
    assert!(matches!(
        p.qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Id { id: bob.id.clone() }
        ))
        .await
        .unwrap(),
        QualifyOutcome::AlreadyQualified {
            qualified_at: Some(_)
        }
    ));
    assert_eq!(
        p.unqualify(&call(
            QualifyAction::Unqualify,
            ReferralKey::Id { id: bob.id.clone() }
        ))
        .await
        .unwrap(),
        QualifyOutcome::Unqualified
    );
    // Rewards are v2-only in this client: said plainly, without a request.
    assert_eq!(
        p.rewards_due().await.unwrap_err().kind(),
        &ErrorKind::Unsupported
    );
}

// ---- the runs -----------------------------------------------------------------------------------

#[tokio::test]
async fn v2_suite_on_sqlite() {
    v2_suite(sqlite_db()).await;
}

#[tokio::test]
async fn v1_suite_on_sqlite() {
    v1_suite(sqlite_db()).await;
}

#[tokio::test]
async fn v2_suite_on_postgres() {
    if let Some(db) = postgres_db().await {
        v2_suite(db).await;
    }
}

#[tokio::test]
async fn v1_suite_on_postgres() {
    if let Some(db) = postgres_db().await {
        v1_suite(db).await;
    }
}

/// The token is checked by the ledger: a wrong one gives the actionable 401 message.
#[tokio::test]
async fn a_wrong_token_is_unauthorized_on_the_ledger_too() {
    let s = serve(sqlite_db()).await;
    let cfg = Config::new("not-the-token").with_base_url(format!("{}/api/v2", s.base));
    let c = ReferralFactory::new(cfg).unwrap();
    let e = c
        .find_user(&ReferralKey::Id { id: "1".into() })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unauthorized);
    assert_eq!(e.message(), refsync_referral_factory::UNAUTHORIZED_MESSAGE);
}

// ---- concurrent qualifies -----------------------------------------------------------------------

/// Counts the qualification calls reaching the ledger and, when armed, holds each of them until
/// `n` are waiting (so every caller's look-up has seen the referral pending).
#[derive(Default)]
struct QualifyCalls {
    count: std::sync::atomic::AtomicUsize,
    barrier: std::sync::Mutex<Option<std::sync::Arc<tokio::sync::Barrier>>>,
}

/// The ledger's HTTP API behind [`QualifyCalls`].
async fn serve_watched(db: TestDb) -> (Served, std::sync::Arc<QualifyCalls>) {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let ledger = Ledger::open(&db.url).await.expect("open the ledger");
    let calls = Arc::new(QualifyCalls::default());
    let watch = calls.clone();
    let app = router(
        ledger.clone(),
        HttpOptions::new(API_TOKEN).with_webhook_token(HOOK_TOKEN),
    )
    .layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let watch = watch.clone();
            async move {
                if request.method() == axum::http::Method::PUT
                    && request.uri().path().ends_with("/users/qualification")
                {
                    watch.count.fetch_add(1, Ordering::SeqCst);
                    let barrier = watch.barrier.lock().unwrap().clone();
                    if let Some(barrier) = barrier {
                        barrier.wait().await;
                    }
                }
                next.run(request).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve the ledger");
    });
    let served = Served {
        base: format!("http://{addr}"),
        ledger,
        server,
        _db: db,
    };
    (served, calls)
}

/// Twelve concurrent qualifies of one referral: exactly one `Qualified`, eleven
/// `AlreadyQualified` (what the ledger's own `ReferralPlatform::qualify` says), one reward.
/// Through one client, whose calls share a single qualification call; and through twelve
/// clients whose look-ups all saw the referral pending, each told by the answer's message
/// whether it qualified it or another one did.
async fn concurrent_qualify(db: TestDb) {
    use std::sync::atomic::Ordering;

    const N: usize = 12;
    let (s, calls) = serve_watched(db).await;
    let cid = s.campaign("Race").await;
    let c = s.client(ApiVersion::V2);
    let ann = c
        .add_user(&CreateUser::new(&cid, "Ann", "ann@example.com"))
        .await
        .unwrap();
    for (name, one_client) in [("Bob", true), ("Cat", false)] {
        let invited = c
            .add_user(
                &CreateUser::new(&cid, name, format!("{name}@example.com"))
                    .referrer(ReferrerRef::Code(code(&ann))),
            )
            .await
            .unwrap();
        let key = ReferralKey::Code {
            code: code(&invited),
        };
        calls.count.store(0, Ordering::SeqCst);
        *calls.barrier.lock().unwrap() =
            (!one_client).then(|| std::sync::Arc::new(tokio::sync::Barrier::new(N)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..N {
            let client = if one_client {
                c.clone()
            } else {
                s.client(ApiVersion::V2)
            };
            let key = key.clone();
            tasks.spawn(async move { client.qualify_user(&key).await.unwrap() });
        }
        let outcomes = tasks.join_all().await;
        let qualified_at = c
            .find_user(&key)
            .await
            .unwrap()
            .unwrap()
            .qualified_at
            .expect("qualified");
        let fresh = outcomes
            .iter()
            .filter(|o| matches!(o, QualifyOutcome::Qualified { user: Some(u) } if u.qualified_at == Some(qualified_at)))
            .count();
        let already = outcomes
            .iter()
            .filter(|o| {
                **o == QualifyOutcome::AlreadyQualified {
                    qualified_at: Some(qualified_at),
                }
            })
            .count();
        let summary: Vec<&str> = outcomes
            .iter()
            .map(|o| match o {
                QualifyOutcome::Qualified { .. } => "Qualified",
                QualifyOutcome::AlreadyQualified { .. } => "AlreadyQualified",
                QualifyOutcome::Unqualified => "Unqualified",
                QualifyOutcome::NotQualified => "NotQualified",
            })
            .collect();
        assert_eq!(
            (fresh, already),
            (1, N - 1),
            "{name} (one client: {one_client}): {summary:?}"
        );
        let expected_calls = if one_client { 1 } else { N };
        assert_eq!(
            calls.count.load(Ordering::SeqCst),
            expected_calls,
            "qualification calls for {name}"
        );
    }
    let p: &dyn ReferralPlatform = &c;
    assert_eq!(p.rewards_due().await.unwrap().len(), 2, "one reward each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_qualifies_on_sqlite() {
    concurrent_qualify(sqlite_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_qualifies_on_postgres() {
    if let Some(db) = postgres_db().await {
        concurrent_qualify(db).await;
    }
}
