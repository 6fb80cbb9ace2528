//! Qualification rules: pure functions from a canonical event (and what is known of the
//! referral so far) to a [`Verdict`]; built-in rules and their config form ([`RuleSpec`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::ReferralKey;
use crate::error::{Error, Result};
use crate::event::{Change, CrmEvent, ObjectKind};
use crate::mapping::CrmObjectRef;

/// What the engine knows of the referral an event concerns: the referral it is linked to, the
/// CRM objects linked to it, and the events seen before (oldest first, including earlier
/// events of the same delivery).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferralHistory {
    /// The referral linked to the event's object, when the link table knows it.
    pub referral: Option<ReferralKey>,
    /// The campaign of the referral, when known.
    pub campaign: Option<String>,
    /// CRM objects linked to the referral (person, lead, deal, contact...).
    pub links: Vec<CrmObjectRef>,
    /// Earlier events for the referral's objects, oldest first.
    pub events: Vec<CrmEvent>,
}

impl ReferralHistory {
    /// The most recent stage of deal `deal_id` seen in `events` then `current`.
    fn latest_stage<'a>(&'a self, deal_id: &str, current: Option<&'a CrmEvent>) -> Option<&'a str> {
        self.events
            .iter()
            .chain(current)
            .filter(|e| e.object.kind == ObjectKind::Deal && e.object.id == deal_id)
            .filter_map(|e| match &e.change {
                Change::StageChanged { to, .. } => Some(to.as_str()),
                _ => None,
            })
            .next_back()
    }
}

/// The decision of a rule on one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Qualify the referral.
    Qualify {
        /// The rule that decided (its [`QualificationRule::name`]).
        rule: String,
        /// Why, in words an operator understands.
        reason: String,
    },
    /// Revert a qualification (refund, cancellation).
    Unqualify {
        /// The rule that decided.
        rule: String,
        /// Why.
        reason: String,
    },
    /// Do nothing.
    Skip {
        /// The rule that decided.
        rule: String,
        /// Why nothing happens (shown by `refsync inspect` and the audit timeline).
        reason: String,
    },
}

impl Verdict {
    /// Whether the verdict is `Qualify`.
    pub fn is_qualify(&self) -> bool {
        matches!(self, Verdict::Qualify { .. })
    }
    /// The rule name.
    pub fn rule(&self) -> &str {
        match self {
            Verdict::Qualify { rule, .. }
            | Verdict::Unqualify { rule, .. }
            | Verdict::Skip { rule, .. } => rule,
        }
    }
    /// The reason.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Qualify { reason, .. }
            | Verdict::Unqualify { reason, .. }
            | Verdict::Skip { reason, .. } => reason,
        }
    }
}

/// A rule that decides whether an event qualifies a referral. Pure: no I/O, never panics.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait QualificationRule: Send + Sync + fmt::Debug {
    /// A stable name including parameters (`deal_stage_changed(to=3)`); part of the idempotency
    /// key of the qualify call.
    fn name(&self) -> String;
    /// Decides on `event` given what is known of its referral.
    fn evaluate(&self, event: &CrmEvent, history: &ReferralHistory) -> Verdict;
}

fn qualify(rule: &dyn QualificationRule, reason: impl Into<String>) -> Verdict {
    Verdict::Qualify {
        rule: rule.name(),
        reason: reason.into(),
    }
}
fn skip(rule: &dyn QualificationRule, reason: impl Into<String>) -> Verdict {
    Verdict::Skip {
        rule: rule.name(),
        reason: reason.into(),
    }
}

/// Qualifies when a lead linked to the referral is converted.
#[derive(Debug, Clone, Default)]
pub struct LeadConverted;

impl QualificationRule for LeadConverted {
    fn name(&self) -> String {
        "lead_converted".into()
    }
    fn evaluate(&self, event: &CrmEvent, _history: &ReferralHistory) -> Verdict {
        match &event.change {
            Change::LeadConverted { lead_id, deal_id } => qualify(
                self,
                match deal_id {
                    Some(d) => format!("lead {lead_id} converted into deal {d}"),
                    None => format!("lead {lead_id} converted"),
                },
            ),
            other => skip(
                self,
                format!("{} is not a lead conversion", other.type_name()),
            ),
        }
    }
}

/// Qualifies when the lead has been converted AND the resulting deal is at `stage`, in
/// whichever order the two facts arrive (one webhook or two).
#[derive(Debug, Clone)]
pub struct LeadConvertedAtStage {
    /// The stage id the converted deal must reach.
    pub stage: String,
}

impl QualificationRule for LeadConvertedAtStage {
    fn name(&self) -> String {
        format!("lead_converted_at_stage(stage={})", self.stage)
    }
    fn evaluate(&self, event: &CrmEvent, history: &ReferralHistory) -> Verdict {
        let conversions = || {
            history
                .events
                .iter()
                .chain(std::iter::once(event))
                .filter_map(|e| match &e.change {
                    Change::LeadConverted { deal_id, .. } => Some(deal_id.as_deref()),
                    _ => None,
                })
        };
        match &event.change {
            Change::LeadConverted { lead_id, deal_id } => {
                let Some(deal) = deal_id else {
                    return skip(
                        self,
                        format!("lead {lead_id} converted, but the deal is not known yet"),
                    );
                };
                match history.latest_stage(deal, None) {
                    Some(s) if s == self.stage => qualify(
                        self,
                        format!("lead {lead_id} converted into deal {deal}, which is at stage {s}"),
                    ),
                    Some(s) => skip(
                        self,
                        format!(
                            "lead converted; deal {deal} is at stage {s}, waiting for stage {}",
                            self.stage
                        ),
                    ),
                    None => skip(
                        self,
                        format!(
                            "lead converted; stage of deal {deal} not known yet, waiting for stage {}",
                            self.stage
                        ),
                    ),
                }
            }
            Change::StageChanged { to, .. } if event.object.kind == ObjectKind::Deal => {
                if *to != self.stage {
                    return skip(
                        self,
                        format!("deal moved to stage {to}, not {}", self.stage),
                    );
                }
                let deal = &event.object.id;
                // A conversion that did not name its deal counts only for a deal linked to the
                // referral: otherwise any deal reaching the stage would qualify.
                let linked = history
                    .links
                    .iter()
                    .any(|l| l.kind == ObjectKind::Deal && l.id == *deal);
                let converted = conversions().any(|d| d.map_or(linked, |d| d == deal));
                if converted {
                    qualify(self, format!("converted deal {deal} reached stage {to}"))
                } else {
                    skip(
                        self,
                        format!(
                            "deal {deal} reached stage {to}, but no lead conversion is known for it"
                        ),
                    )
                }
            }
            other => skip(
                self,
                format!(
                    "{} on {} is neither a conversion nor a deal stage change",
                    other.type_name(),
                    event.object.kind
                ),
            ),
        }
    }
}

/// Qualifies when a deal moves to stage `to` (optionally only in `pipeline`).
#[derive(Debug, Clone)]
pub struct DealStageChanged {
    /// Target stage id.
    pub to: String,
    /// Only in this pipeline, when set.
    pub pipeline: Option<String>,
}

impl QualificationRule for DealStageChanged {
    fn name(&self) -> String {
        match &self.pipeline {
            Some(p) => format!("deal_stage_changed(pipeline={p},to={})", self.to),
            None => format!("deal_stage_changed(to={})", self.to),
        }
    }
    fn evaluate(&self, event: &CrmEvent, _history: &ReferralHistory) -> Verdict {
        match &event.change {
            Change::StageChanged { pipeline, from, to }
                if event.object.kind == ObjectKind::Deal =>
            {
                if from.as_deref() == Some(to.as_str()) {
                    return skip(self, format!("deal stayed at stage {to}: not a move"));
                }
                if *to != self.to {
                    return skip(self, format!("deal moved to stage {to}, not {}", self.to));
                }
                match (&self.pipeline, pipeline) {
                    (Some(want), Some(got)) if want != got => {
                        skip(self, format!("stage {to} is in pipeline {got}, not {want}"))
                    }
                    (Some(want), None) => skip(
                        self,
                        format!(
                            "the event does not say the pipeline (rule requires {want}); enrich must fill it"
                        ),
                    ),
                    _ => qualify(
                        self,
                        format!("deal {} moved to stage {to}", event.object.id),
                    ),
                }
            }
            other => skip(
                self,
                format!(
                    "{} on {} is not a deal stage change",
                    other.type_name(),
                    event.object.kind
                ),
            ),
        }
    }
}

/// Qualifies when a deal's status becomes `won` (a closed-won stage, never a label match).
#[derive(Debug, Clone, Default)]
pub struct DealWon;

impl QualificationRule for DealWon {
    fn name(&self) -> String {
        "deal_won".into()
    }
    fn evaluate(&self, event: &CrmEvent, _history: &ReferralHistory) -> Verdict {
        match &event.change {
            Change::StatusChanged { to, .. } if event.object.kind == ObjectKind::Deal => {
                if to == "won" {
                    qualify(self, format!("deal {} won", event.object.id))
                } else {
                    skip(self, format!("deal status is {to}, not won"))
                }
            }
            other => skip(
                self,
                format!(
                    "{} on {} is not a deal status change",
                    other.type_name(),
                    event.object.kind
                ),
            ),
        }
    }
}

/// Qualifies when a coupon is used on an order whose status counts as paid.
#[derive(Debug, Clone)]
pub struct CouponUsed {
    /// Order statuses that count as paid (compared case-insensitively).
    pub paid_statuses: Vec<String>,
}

impl Default for CouponUsed {
    fn default() -> Self {
        CouponUsed {
            paid_statuses: default_paid_statuses(),
        }
    }
}

fn default_paid_statuses() -> Vec<String> {
    ["paid", "processing", "completed"]
        .map(String::from)
        .to_vec()
}

impl QualificationRule for CouponUsed {
    fn name(&self) -> String {
        "coupon_used".into()
    }
    fn evaluate(&self, event: &CrmEvent, _history: &ReferralHistory) -> Verdict {
        match &event.change {
            Change::CouponUsed { code, order_status } => match order_status {
                Some(s) if self.paid_statuses.iter().any(|p| p.eq_ignore_ascii_case(s)) => {
                    qualify(self, format!("coupon {code} used on a {s} order"))
                }
                Some(s) => skip(
                    self,
                    format!("coupon {code} used, but order status {s} is not paid"),
                ),
                None => skip(
                    self,
                    format!("coupon {code} used, but the order status is unknown"),
                ),
            },
            other => skip(self, format!("{} is not a coupon use", other.type_name())),
        }
    }
}

/// Unqualifies when the object's status becomes one of `statuses` (refunds, cancellations).
#[derive(Debug, Clone)]
pub struct UnqualifyOnStatus {
    /// Statuses that revert a qualification.
    pub statuses: Vec<String>,
}

impl QualificationRule for UnqualifyOnStatus {
    fn name(&self) -> String {
        format!("unqualify_on_status({})", self.statuses.join("|"))
    }
    fn evaluate(&self, event: &CrmEvent, _history: &ReferralHistory) -> Verdict {
        match &event.change {
            Change::StatusChanged { to, .. }
                if self.statuses.iter().any(|s| s.eq_ignore_ascii_case(to)) =>
            {
                Verdict::Unqualify {
                    rule: self.name(),
                    reason: format!("{} {} is now {to}", event.object.kind, event.object.id),
                }
            }
            other => skip(
                self,
                format!("{} is not one of the reverting statuses", other.type_name()),
            ),
        }
    }
}

fn combinator_name(kind: &str, rules: &[Box<dyn QualificationRule>]) -> String {
    let names: Vec<String> = rules.iter().map(|r| r.name()).collect();
    format!("{kind}({})", names.join(","))
}

/// Qualifies when any child rule qualifies (first one wins).
#[derive(Debug)]
pub struct AnyOf(pub Vec<Box<dyn QualificationRule>>);

impl QualificationRule for AnyOf {
    fn name(&self) -> String {
        combinator_name("any_of", &self.0)
    }
    fn evaluate(&self, event: &CrmEvent, history: &ReferralHistory) -> Verdict {
        let mut reasons = Vec::new();
        for rule in &self.0 {
            // The verdict carries the combinator's name: it is the configured rule, and its name
            // is part of the idempotency key.
            match rule.evaluate(event, history) {
                Verdict::Qualify { rule, reason } => {
                    return Verdict::Qualify {
                        rule: self.name(),
                        reason: format!("{rule}: {reason}"),
                    };
                }
                Verdict::Unqualify { rule, reason } => {
                    return Verdict::Unqualify {
                        rule: self.name(),
                        reason: format!("{rule}: {reason}"),
                    };
                }
                Verdict::Skip { reason, .. } => reasons.push(reason),
            }
        }
        skip(self, reasons.join("; "))
    }
}

/// Qualifies when every child rule is satisfied, by this event or an earlier one, and at least
/// one of them by this event (so the qualification fires once, when the last fact arrives).
#[derive(Debug)]
pub struct AllOf(pub Vec<Box<dyn QualificationRule>>);

impl QualificationRule for AllOf {
    fn name(&self) -> String {
        combinator_name("all_of", &self.0)
    }
    fn evaluate(&self, event: &CrmEvent, history: &ReferralHistory) -> Verdict {
        if self.0.is_empty() {
            return skip(self, "all_of has no rules");
        }
        let mut now_any = false;
        let mut reasons = Vec::new();
        for rule in &self.0 {
            let now = rule.evaluate(event, history);
            if now.is_qualify() {
                now_any = true;
                reasons.push(now.reason().to_owned());
                continue;
            }
            let before = history.events.iter().find_map(|e| {
                let v = rule.evaluate(e, history);
                v.is_qualify().then(|| v.reason().to_owned())
            });
            match before {
                Some(r) => reasons.push(format!("earlier: {r}")),
                None => {
                    return skip(
                        self,
                        format!("{} not satisfied: {}", rule.name(), now.reason()),
                    );
                }
            }
        }
        if now_any {
            qualify(self, reasons.join("; "))
        } else {
            skip(self, "all conditions were already met by earlier events")
        }
    }
}

/// The config form of a rule: `{ rule = "deal_stage_changed", to = "3" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleSpec {
    /// See [`LeadConverted`].
    LeadConverted {},
    /// See [`LeadConvertedAtStage`].
    LeadConvertedAtStage {
        /// Stage id.
        stage: String,
    },
    /// See [`DealStageChanged`].
    DealStageChanged {
        /// Stage id.
        to: String,
        /// Pipeline id (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline: Option<String>,
    },
    /// See [`DealWon`].
    DealWon {},
    /// See [`CouponUsed`].
    CouponUsed {
        /// Statuses that count as paid; default `paid`, `processing`, `completed`.
        #[serde(default = "default_paid_statuses")]
        paid_statuses: Vec<String>,
    },
    /// See [`UnqualifyOnStatus`].
    UnqualifyOnStatus {
        /// Statuses that revert a qualification, e.g. `refunded`, `cancelled`.
        statuses: Vec<String>,
    },
    /// See [`AnyOf`].
    AnyOf {
        /// Child rules.
        rules: Vec<RuleSpec>,
    },
    /// See [`AllOf`].
    AllOf {
        /// Child rules.
        rules: Vec<RuleSpec>,
    },
}

impl RuleSpec {
    /// Builds the rule; empty ids and empty combinators are config errors.
    pub fn build(&self) -> Result<Box<dyn QualificationRule>> {
        let non_empty = |what: &str, v: &str| {
            if v.trim().is_empty() {
                Err(Error::config(format!("rule: {what} must not be empty")))
            } else {
                Ok(v.to_owned())
            }
        };
        Ok(match self {
            RuleSpec::LeadConverted {} => Box::new(LeadConverted),
            RuleSpec::LeadConvertedAtStage { stage } => Box::new(LeadConvertedAtStage {
                stage: non_empty("lead_converted_at_stage.stage", stage)?,
            }),
            RuleSpec::DealStageChanged { to, pipeline } => Box::new(DealStageChanged {
                to: non_empty("deal_stage_changed.to", to)?,
                pipeline: pipeline.clone(),
            }),
            RuleSpec::DealWon {} => Box::new(DealWon),
            RuleSpec::CouponUsed { paid_statuses } => {
                if paid_statuses.is_empty() {
                    return Err(Error::config(
                        "rule coupon_used: paid_statuses must not be empty",
                    ));
                }
                Box::new(CouponUsed {
                    paid_statuses: paid_statuses.clone(),
                })
            }
            RuleSpec::UnqualifyOnStatus { statuses } => {
                if statuses.is_empty() {
                    return Err(Error::config(
                        "rule unqualify_on_status: statuses must not be empty",
                    ));
                }
                Box::new(UnqualifyOnStatus {
                    statuses: statuses.clone(),
                })
            }
            RuleSpec::AnyOf { rules } | RuleSpec::AllOf { rules } => {
                if rules.is_empty() {
                    return Err(Error::config("rule any_of/all_of: rules must not be empty"));
                }
                let built = rules
                    .iter()
                    .map(RuleSpec::build)
                    .collect::<Result<Vec<_>>>()?;
                if matches!(self, RuleSpec::AnyOf { .. }) {
                    Box::new(AnyOf(built))
                } else {
                    Box::new(AllOf(built))
                }
            }
        })
    }
}

/// Which referral an event concerns: the linked referral, else the event's referral code, else
/// its coupon (the coupon used, or a coupon among its `related` objects), else its email within
/// `campaign`.
pub fn resolve_referral(
    event: &CrmEvent,
    history: &ReferralHistory,
    campaign: Option<&str>,
) -> Option<ReferralKey> {
    if let Some(k) = &history.referral {
        return Some(k.clone());
    }
    if let Some(code) = event
        .referral_code
        .as_deref()
        .filter(|c| !c.trim().is_empty())
    {
        return Some(ReferralKey::Code {
            code: code.trim().to_owned(),
        });
    }
    if let Change::CouponUsed { code, .. } = &event.change {
        return Some(ReferralKey::Coupon {
            coupon: code.clone(),
        });
    }
    // An order paid with a referral's coupon belongs to that referral (a refund of it can
    // unqualify it even where no link was recorded, e.g. a coupon from the platform's pool).
    if let Some(coupon) = event
        .related
        .iter()
        .find(|o| o.kind == ObjectKind::Coupon && !o.id.trim().is_empty())
    {
        return Some(ReferralKey::Coupon {
            coupon: coupon.id.clone(),
        });
    }
    match (
        event.email.as_deref(),
        campaign.or(history.campaign.as_deref()),
    ) {
        (Some(email), Some(campaign)) if !email.trim().is_empty() => Some(ReferralKey::Email {
            email: email.trim().to_owned(),
            campaign: campaign.to_owned(),
        }),
        _ => None,
    }
}

/// Derives a lead conversion that the CRM does not report as such (Pipedrive has no conversion
/// event): the referral's lead was **deleted** and a **deal was created** for the referral, in
/// either order. `event` is the newest fact, `history` what is known of its referral (the lead
/// comes from `history.links`, the other fact from `history.events`).
///
/// Returns the `lead_converted` event to evaluate and record after `event`, or `None` when the
/// two facts are not both known yet, or a conversion of that lead is already known. The derived
/// event is deterministic (same inputs, same event), so a redelivery does not derive a new one.
/// What this cannot see: a lead deleted and a deal created for the same referral by hand looks
/// like a conversion; a converted lead whose deal carries neither the referral code nor the
/// pushed person is not seen at all.
pub fn derive_lead_conversion(event: &CrmEvent, history: &ReferralHistory) -> Option<CrmEvent> {
    let linked_lead = |id: &str| {
        history
            .links
            .iter()
            .any(|l| l.kind == ObjectKind::Lead && l.id == id)
    };
    let known =
        |lead: &str| {
            history.events.iter().chain(std::iter::once(event)).any(
                |e| matches!(&e.change, Change::LeadConverted { lead_id, .. } if lead_id == lead),
            )
        };
    let (lead, deal) = match (&event.object.kind, &event.change) {
        (ObjectKind::Lead, Change::Deleted) if linked_lead(&event.object.id) => {
            let deal = history.events.iter().rev().find(|e| {
                e.object.kind == ObjectKind::Deal && matches!(e.change, Change::Created)
            })?;
            (event.object.id.clone(), deal.object.id.clone())
        }
        (ObjectKind::Deal, Change::Created) => {
            let lead = history.events.iter().rev().find(|e| {
                e.object.kind == ObjectKind::Lead
                    && matches!(e.change, Change::Deleted)
                    && linked_lead(&e.object.id)
            })?;
            (lead.object.id.clone(), event.object.id.clone())
        }
        _ => return None,
    };
    if known(&lead) {
        return None;
    }
    Some(CrmEvent {
        delivery_id: event.delivery_id.clone(),
        occurred_at: event.occurred_at,
        referral_code: event.referral_code.clone(),
        email: event.email.clone(),
        account: event.account.clone(),
        related: vec![crate::event::EventObject {
            kind: ObjectKind::Deal,
            id: deal.clone(),
        }],
        ..CrmEvent::new(
            event.source.clone(),
            ObjectKind::Lead,
            lead.clone(),
            Change::LeadConverted {
                lead_id: lead,
                deal_id: Some(deal),
            },
        )
    })
}

/// Whether a call qualifies or unqualifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualifyAction {
    /// Qualify.
    Qualify,
    /// Revert a qualification.
    Unqualify,
}

/// One call to make on the referral platform, with its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualifyCall {
    /// Qualify or unqualify.
    pub action: QualifyAction,
    /// The campaign, when known (required to qualify by email).
    pub campaign: Option<String>,
    /// Which referral.
    pub referral: ReferralKey,
    /// The rule that decided.
    pub rule: String,
    /// Why.
    pub reason: String,
}

impl QualifyCall {
    /// The idempotency key: unique per (action, campaign, referral, rule), never expiring.
    pub fn idempotency_key(&self) -> String {
        let action = match self.action {
            QualifyAction::Qualify => "qualify",
            QualifyAction::Unqualify => "unqualify",
        };
        format!(
            "{action}:{}:{}:{}",
            self.campaign.as_deref().unwrap_or("-"),
            self.referral.canonical(),
            self.rule
        )
    }
}

impl QualifyCall {
    /// The key of "this referral in this campaign", without the rule: the engine allows one
    /// successful qualification per such key, so two rules (or an edited rule) that both fire
    /// for one referral still qualify it once. `idempotency_key` deduplicates redeliveries of the
    /// same decision; this one enforces "at most once per campaign".
    pub fn referral_key(&self) -> String {
        format!(
            "{}:{}",
            self.campaign.as_deref().unwrap_or("-"),
            self.referral.canonical()
        )
    }
}

/// The outcome of evaluating one rule on one event: its verdict and, for qualify/unqualify
/// verdicts whose referral is known, the call to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The rule's verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The call, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<QualifyCall>,
}

/// Evaluates each rule on `event` and turns qualify/unqualify verdicts into calls. A verdict
/// whose referral cannot be resolved becomes a `Skip` that says so.
pub fn decide(
    rules: &[Box<dyn QualificationRule>],
    event: &CrmEvent,
    history: &ReferralHistory,
    campaign: Option<&str>,
) -> Vec<Decision> {
    let stale = superseded_by(event, history);
    rules
        .iter()
        .map(|rule| {
            if let Some(newer) = stale {
                return Decision {
                    verdict: Verdict::Skip {
                        rule: rule.name(),
                        reason: stale_reason(event, newer),
                    },
                    call: None,
                };
            }
            let verdict = rule.evaluate(event, history);
            let action = match &verdict {
                Verdict::Qualify { .. } => QualifyAction::Qualify,
                Verdict::Unqualify { .. } => QualifyAction::Unqualify,
                Verdict::Skip { .. } => return Decision { verdict, call: None },
            };
            match resolve_referral(event, history, campaign) {
                Some(referral) => Decision {
                    call: Some(QualifyCall {
                        action,
                        campaign: campaign.map(str::to_owned).or_else(|| history.campaign.clone()),
                        referral,
                        rule: verdict.rule().to_owned(),
                        reason: verdict.reason().to_owned(),
                    }),
                    verdict,
                },
                None => Decision {
                    verdict: Verdict::Skip {
                        rule: verdict.rule().to_owned(),
                        reason: format!(
                            "{} — but no referral is linked to {} {} and the event carries no referral code, coupon or email",
                            verdict.reason(),
                            event.object.kind,
                            event.object.id
                        ),
                    },
                    call: None,
                },
            }
        })
        .collect()
}

/// Which fact about its object an event reports, for ordering: its stage or its status.
fn fact_of(change: &Change) -> Option<&'static str> {
    match change {
        Change::StageChanged { .. } => Some("stage"),
        Change::StatusChanged { .. } => Some("status"),
        _ => None,
    }
}

/// The newer event already recorded about the same object and the same fact (stage or
/// status), when `event` is older than it. Vendors deliver out of order (HubSpot says so):
/// applying such a stale event would undo a newer fact (a deal `won` after it was `lost`, an
/// order `paid` after its refund), so it decides nothing. Events without a time are never
/// stale.
pub fn superseded_by<'a>(event: &CrmEvent, history: &'a ReferralHistory) -> Option<&'a CrmEvent> {
    let fact = fact_of(&event.change)?;
    let at = event.occurred_at?;
    history.events.iter().find(|e| {
        e.object == event.object
            && fact_of(&e.change) == Some(fact)
            && e.occurred_at.is_some_and(|t| t > at)
    })
}

fn stale_reason(event: &CrmEvent, newer: &CrmEvent) -> String {
    let when = |e: &CrmEvent| {
        e.occurred_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    format!(
        "stale: this {} of {} {} happened at {}, before the {} at {} already recorded; ignored",
        event.change.type_name(),
        event.object.kind,
        event.object.id,
        when(event),
        newer.change.type_name(),
        when(newer)
    )
}

/// The rules' decisions on one event of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDecisions {
    /// The event's object.
    pub object: crate::event::EventObject,
    /// One decision per rule, in rule order.
    pub decisions: Vec<Decision>,
}

/// Evaluates `rules` on every event of one delivery, in order; each event sees the earlier
/// events of the delivery in its history (after `history.events`). This is what
/// `refsync inspect` prints as `verdicts` and what fixture expected files record.
pub fn decide_delivery(
    rules: &[Box<dyn QualificationRule>],
    events: &[CrmEvent],
    mut history: ReferralHistory,
    campaign: Option<&str>,
) -> Vec<EventDecisions> {
    events
        .iter()
        .map(|e| {
            let decisions = decide(rules, e, &history, campaign);
            history.events.push(e.clone());
            EventDecisions {
                object: e.object.clone(),
                decisions,
            }
        })
        .collect()
}
