-- refsync-ledger schema v2: lookups by email (a qualify key, GET /users/{email}, a referrer
-- named by email, filter[email][equal]) match the email exactly, without case
-- (LOWER(email) = LOWER(<trimmed value>)); this index serves them. The normalized email stays
-- the uniqueness key (users_campaign_email_unique) and the self-referral check.
CREATE INDEX users_campaign_email_lower ON users (campaign_id, LOWER(email));
