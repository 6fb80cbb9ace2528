-- refsync-ledger schema v1 (SQLite). Times are UTC RFC 3339 text with microseconds
-- ('2026-01-31T12:00:00.000000Z'): fixed width, so text order is time order.
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    link_base_url TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    referrer_id INTEGER REFERENCES users (id),
    code TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL,
    user_type TEXT NOT NULL CHECK (user_type IN ('person_referring', 'person_invited')),
    source TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '[]',
    signed_up_at TEXT NOT NULL,
    qualified_at TEXT,
    CONSTRAINT users_campaign_email_unique UNIQUE (campaign_id, email_normalized)
);
CREATE INDEX users_referrer ON users (referrer_id);

-- One open qualification per user, enforced by the database as well as by the conditional
-- UPDATE of users.qualified_at.
CREATE TABLE qualifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id),
    qualified_at TEXT NOT NULL,
    via TEXT NOT NULL,
    unqualified_at TEXT
);
CREATE UNIQUE INDEX qualifications_one_open ON qualifications (user_id) WHERE unqualified_at IS NULL;

CREATE TABLE reward_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    recipient TEXT NOT NULL CHECK (recipient IN ('referrer', 'invited', 'both')),
    trigger_event TEXT NOT NULL CHECK (trigger_event IN ('when_invited', 'when_qualified')),
    metric TEXT NOT NULL CHECK (metric IN ('amount', 'commission', 'coupon', 'custom')),
    amount INTEGER,
    value TEXT,
    cap_per_referrer INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX reward_rules_campaign ON reward_rules (campaign_id);

-- One reward per rule, recipient and referral, ever: repeated or concurrent qualifications
-- cannot create a second set.
CREATE TABLE rewards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id INTEGER NOT NULL REFERENCES reward_rules (id),
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    recipient_id INTEGER NOT NULL REFERENCES users (id),
    referral_id INTEGER NOT NULL REFERENCES users (id),
    referrer_id INTEGER NOT NULL REFERENCES users (id),
    trigger_event TEXT NOT NULL,
    metric TEXT NOT NULL,
    amount INTEGER,
    value TEXT,
    status TEXT NOT NULL CHECK (status IN ('due', 'issued', 'cancelled')),
    created_at TEXT NOT NULL,
    issued_at TEXT,
    cancelled_at TEXT,
    cancel_reason TEXT,
    CONSTRAINT rewards_once UNIQUE (rule_id, recipient_id, referral_id)
);
CREATE INDEX rewards_status ON rewards (status, id);
CREATE INDEX rewards_referral ON rewards (referral_id);
CREATE INDEX rewards_recipient ON rewards (recipient_id);
CREATE INDEX rewards_rule_referrer ON rewards (rule_id, referrer_id);

CREATE TABLE coupons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    code TEXT NOT NULL,
    code_normalized TEXT NOT NULL UNIQUE,
    user_id INTEGER UNIQUE REFERENCES users (id),
    assigned_at TEXT,
    redeemed_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX coupons_unused ON coupons (campaign_id, user_id, id);
