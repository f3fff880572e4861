//! The gRPC adapter of the sales side: deal locks ([`DealApi`]), leads
//! ([`LeadApi`]) and opportunities ([`OpportunityApi`]). A partner principal sees
//! only its own locks, leads and opportunities; another partner's are NOT_FOUND.

use std::sync::Arc;

use retail_kit::convert::{opt_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::money::MAX_AMOUNT_MINOR;
use retail_kit::paging::Page;
use retail_proto::partner as pb;
use retail_proto::partner::deal_service_server::DealService;
use retail_proto::partner::lead_service_server::LeadService;
use retail_proto::partner::opportunity_service_server::OpportunityService;
use retail_proto::partner::visit_service_server::VisitService;
use tonic::Request;

use super::{ADMIN, READ, Rpc, WRITE, caller, ok, parse};
use crate::app::App;
use crate::app::deals::{CustomerInput, NewLock, lock_name};
use crate::app::leads::{LeadChanges, LeadView, NewLead};
use crate::app::opportunities::{NewOpportunity, OpportunityView, opportunity_name};
use crate::app::visits::{NewVisit, Place, key_customer_name, visit_name};
use crate::domain::ids::{PartnerId, RepId, collection_id};
use crate::domain::sales::{CustomerClass, LeadState, LockState, ManInputs, Stage, StageLine, SubjectKind, Trend};
use crate::store::{self, deal_lock};

/// Deal locks.
#[derive(Debug, Clone)]
pub(crate) struct DealApi {
    app: Arc<App>,
}

impl DealApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// Leads.
#[derive(Debug, Clone)]
pub(crate) struct LeadApi {
    app: Arc<App>,
}

impl LeadApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// Opportunities and the pipeline.
#[derive(Debug, Clone)]
pub(crate) struct OpportunityApi {
    app: Arc<App>,
}

impl OpportunityApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn customer(v: &mut Violations, field: &str, c: Option<&pb::Customer>) -> CustomerInput {
    let Some(c) = c else {
        v.add(field, "is required");
        return CustomerInput {
            name: String::new(),
            region: String::new(),
            tax_id: String::new(),
        };
    };
    let name = parse::short_text(v, &format!("{field}.display_name"), &c.display_name, 200, true);
    let region = parse::short_text(v, &format!("{field}.region"), &c.region, 32, true);
    let tax_id = parse::short_text(v, &format!("{field}.tax_id"), &c.tax_id, 32, false);
    if !name.is_empty() && !name.chars().any(char::is_alphanumeric) {
        v.add(format!("{field}.display_name"), "must contain a letter or digit");
    }
    if !region.is_empty() && !region.chars().any(char::is_alphanumeric) {
        v.add(format!("{field}.region"), "must contain a letter or digit");
    }
    CustomerInput { name, region, tax_id }
}

fn customer_to_pb(name: &str, region: &str, tax_id: &str) -> pb::Customer {
    pb::Customer {
        display_name: name.to_owned(),
        region: region.to_owned(),
        tax_id: tax_id.to_owned(),
    }
}

/// `partners/{partner_id}/{collection}/{uuid}`.
/// A list's `parent`: one partner (`partners/{id}`), or `None` for `partners/-`
/// (every partner the caller may see).
pub(super) fn parent_partner(v: &mut Violations, parent: &str) -> Option<PartnerId> {
    if parent == "partners/-" {
        None
    } else {
        v.field("parent", PartnerId::parse_name(parent))
    }
}

pub(super) fn child_id(field: &str, name: &str, collection: &str) -> ServiceResult<(PartnerId, String)> {
    let bad = || {
        ServiceError::invalid(
            field,
            format!("must be partners/{{partner_id}}/{collection}/{{id}} with a UUID id"),
        )
    };
    let (partner, rest) = name.split_once(&format!("/{collection}/")).ok_or_else(bad)?;
    let partner = PartnerId::parse_name(partner).map_err(|_| bad())?;
    let id = collection_id(&format!("{collection}/{rest}"), collection).map_err(|_| bad())?;
    Ok((partner, id))
}

fn subject_kind_of_pb(raw: i32) -> Option<SubjectKind> {
    match pb::DealSubjectKind::try_from(raw) {
        Ok(pb::DealSubjectKind::Customer) => Some(SubjectKind::Customer),
        Ok(pb::DealSubjectKind::Opportunity) => Some(SubjectKind::Opportunity),
        Ok(pb::DealSubjectKind::Order) => Some(SubjectKind::Order),
        _ => None,
    }
}

fn subject_kind_to_pb(raw: &str) -> pb::DealSubjectKind {
    match SubjectKind::parse(raw) {
        Some(SubjectKind::Customer) => pb::DealSubjectKind::Customer,
        Some(SubjectKind::Opportunity) => pb::DealSubjectKind::Opportunity,
        Some(SubjectKind::Order) => pb::DealSubjectKind::Order,
        None => pb::DealSubjectKind::Unspecified,
    }
}

fn lock_state_of_pb(raw: i32) -> Result<Option<LockState>, ()> {
    match pb::DealLockState::try_from(raw) {
        Ok(pb::DealLockState::Unspecified) => Ok(None),
        Ok(pb::DealLockState::Active) => Ok(Some(LockState::Active)),
        Ok(pb::DealLockState::Released) => Ok(Some(LockState::Released)),
        Ok(pb::DealLockState::Expired) => Ok(Some(LockState::Expired)),
        Err(_) => Err(()),
    }
}

fn lock_state_to_pb(raw: &str) -> pb::DealLockState {
    match LockState::parse(raw) {
        Some(LockState::Active) => pb::DealLockState::Active,
        Some(LockState::Released) => pb::DealLockState::Released,
        Some(LockState::Expired) => pb::DealLockState::Expired,
        None => pb::DealLockState::Unspecified,
    }
}

fn lock_to_pb(l: &deal_lock::Model) -> pb::DealLock {
    pb::DealLock {
        name: lock_name(&l.partner_id, &l.id),
        subject_kind: subject_kind_to_pb(&l.subject_kind).into(),
        subject_ref: l.subject_ref.clone(),
        customer: Some(customer_to_pb(&l.customer_name, &l.customer_region, &l.customer_tax_id)),
        state: lock_state_to_pb(&l.state).into(),
        registered_by: l.registered_by.clone(),
        create_time: Some(timestamp(l.created_at)),
        expire_time: Some(timestamp(l.expires_at)),
        extended: l.extended,
        extension_reason: l.extension_reason.clone(),
        end_time: opt_timestamp(l.ended_at),
        end_reason: l.end_reason.clone(),
    }
}

fn parse_lock(req: &pb::RegisterDealLockRequest) -> ServiceResult<(PartnerId, NewLock)> {
    let mut v = Violations::new();
    let partner = v.field("parent", PartnerId::parse_name(&req.parent));
    let Some(l) = req.deal_lock.as_ref() else {
        v.add("deal_lock", "is required");
        v.finish()?;
        return Err(ServiceError::invalid("deal_lock", "is required"));
    };
    let kind = subject_kind_of_pb(l.subject_kind);
    let subject_ref = parse::short_text(&mut v, "deal_lock.subject_ref", &l.subject_ref, 100, false);
    match kind {
        None => v.add("deal_lock.subject_kind", "must be customer, opportunity or order"),
        Some(SubjectKind::Customer) if !subject_ref.is_empty() => {
            v.add("deal_lock.subject_ref", "must be empty for a customer");
        }
        Some(SubjectKind::Opportunity | SubjectKind::Order) if subject_ref.is_empty() => {
            v.add("deal_lock.subject_ref", "is required for an opportunity or an order");
        }
        _ => {}
    }
    let customer = customer(&mut v, "deal_lock.customer", l.customer.as_ref());
    v.finish()?;
    match (partner, kind) {
        (Some(partner), Some(kind)) => Ok((
            partner,
            NewLock {
                kind,
                subject_ref,
                customer,
            },
        )),
        _ => Err(ServiceError::invalid("deal_lock", "is invalid")),
    }
}

fn reason(field: &str, raw: &str) -> ServiceResult<String> {
    parse::reason(field, raw)
}

#[tonic::async_trait]
impl DealService for DealApi {
    async fn register_deal_lock(&self, request: Request<pb::RegisterDealLockRequest>) -> Rpc<pb::DealLock> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.RegisterDealLock", &who.owner, &req.request_id, &req)?;
        let (partner, new) = parse_lock(&req)?;
        ok(self
            .app
            .register_lock(&who, &partner, new, key.as_ref(), lock_to_pb)
            .await?)
    }

    async fn get_deal_lock(&self, request: Request<pb::GetDealLockRequest>) -> Rpc<pb::DealLock> {
        let who = caller(&request, READ)?;
        let (partner, id) = child_id("name", &request.get_ref().name, "dealLocks")?;
        ok(lock_to_pb(&self.app.deal_lock(&who, &partner, &id).await?))
    }

    async fn list_deal_locks(&self, request: Request<pb::ListDealLocksRequest>) -> Rpc<pb::ListDealLocksResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let partner = parent_partner(&mut v, &req.parent);
        let state = lock_state_of_pb(req.state).unwrap_or_else(|()| {
            v.add("state", "must be active, released or expired");
            None
        });
        v.finish()?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{}|{}", req.parent, req.state))?;
        let (rows, next_page_token) = self.app.list_deal_locks(&who, partner.as_ref(), state, &page).await?;
        ok(pb::ListDealLocksResponse {
            deal_locks: rows.iter().map(lock_to_pb).collect(),
            next_page_token,
        })
    }

    async fn extend_deal_lock(&self, request: Request<pb::ExtendDealLockRequest>) -> Rpc<pb::DealLock> {
        let who = caller(&request, ADMIN)?;
        let req = request.into_inner();
        let (partner, id) = child_id("name", &req.name, "dealLocks")?;
        let reason = reason("reason", &req.reason)?;
        ok(lock_to_pb(&self.app.extend_lock(&who, &partner, &id, &reason).await?))
    }

    async fn release_deal_lock(&self, request: Request<pb::ReleaseDealLockRequest>) -> Rpc<pb::DealLock> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let (partner, id) = child_id("name", &req.name, "dealLocks")?;
        let reason = reason("reason", &req.reason)?;
        ok(lock_to_pb(&self.app.release_lock(&who, &partner, &id, &reason).await?))
    }

    async fn check_customer_lock(
        &self,
        request: Request<pb::CheckCustomerLockRequest>,
    ) -> Rpc<pb::CheckCustomerLockResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let partner = v.field("partner", PartnerId::parse_name(&req.partner));
        let customer = customer(&mut v, "customer", req.customer.as_ref());
        v.finish()?;
        let partner = partner.ok_or_else(|| ServiceError::invalid("partner", "is invalid"))?;
        ok(pb::CheckCustomerLockResponse {
            locked_to_other_partner: self.app.locked_to_other(&who, &partner, &customer).await?,
        })
    }
}

pub(super) fn class_of_pb(raw: i32) -> Option<CustomerClass> {
    match pb::CustomerClass::try_from(raw) {
        Ok(pb::CustomerClass::S) => Some(CustomerClass::S),
        Ok(pb::CustomerClass::A) => Some(CustomerClass::A),
        Ok(pb::CustomerClass::B) => Some(CustomerClass::B),
        Ok(pb::CustomerClass::C) => Some(CustomerClass::C),
        _ => None,
    }
}

pub(super) fn class_to_pb(raw: &str) -> pb::CustomerClass {
    match CustomerClass::parse(raw) {
        Some(CustomerClass::S) => pb::CustomerClass::S,
        Some(CustomerClass::A) => pb::CustomerClass::A,
        Some(CustomerClass::B) => pb::CustomerClass::B,
        Some(CustomerClass::C) => pb::CustomerClass::C,
        None => pb::CustomerClass::Unspecified,
    }
}

fn trend_of_pb(raw: i32) -> Option<Trend> {
    match pb::FinancialTrend::try_from(raw) {
        Ok(pb::FinancialTrend::Positive) => Some(Trend::Positive),
        Ok(pb::FinancialTrend::Stable) => Some(Trend::Stable),
        Ok(pb::FinancialTrend::Negative) => Some(Trend::Negative),
        _ => None,
    }
}

fn trend_to_pb(raw: &str) -> pb::FinancialTrend {
    match Trend::parse(raw) {
        Some(Trend::Positive) => pb::FinancialTrend::Positive,
        Some(Trend::Stable) => pb::FinancialTrend::Stable,
        Some(Trend::Negative) => pb::FinancialTrend::Negative,
        None => pb::FinancialTrend::Unspecified,
    }
}

fn lead_state_of_pb(raw: i32) -> Result<Option<LeadState>, ()> {
    match pb::LeadState::try_from(raw) {
        Ok(pb::LeadState::Unspecified) => Ok(None),
        Ok(pb::LeadState::Unassigned) => Ok(Some(LeadState::Unassigned)),
        Ok(pb::LeadState::Offered) => Ok(Some(LeadState::Offered)),
        Ok(pb::LeadState::Accepted) => Ok(Some(LeadState::Accepted)),
        Ok(pb::LeadState::Won) => Ok(Some(LeadState::Won)),
        Ok(pb::LeadState::Lost) => Ok(Some(LeadState::Lost)),
        Err(_) => Err(()),
    }
}

fn lead_state_to_pb(raw: &str) -> pb::LeadState {
    match LeadState::parse(raw) {
        Some(LeadState::Unassigned) => pb::LeadState::Unassigned,
        Some(LeadState::Offered) => pb::LeadState::Offered,
        Some(LeadState::Accepted) => pb::LeadState::Accepted,
        Some(LeadState::Won) => pb::LeadState::Won,
        Some(LeadState::Lost) => pb::LeadState::Lost,
        None => pb::LeadState::Unspecified,
    }
}

fn small(raw: i64) -> i32 {
    i32::try_from(raw).unwrap_or(0)
}

fn lead_to_pb(v: &LeadView) -> pb::Lead {
    let l = &v.lead;
    let total = u32::try_from(l.total_tenths).unwrap_or(0);
    pb::Lead {
        name: format!("leads/{}", l.id),
        customer: Some(customer_to_pb(&l.customer_name, &l.customer_region, &l.customer_tax_id)),
        customer_class: class_to_pb(&l.customer_class).into(),
        annual_budget_minor: l.annual_budget_minor,
        special_budget_minor: l.special_budget_minor,
        financial_trend: trend_to_pb(&l.trend).into(),
        authority_score: small(l.authority_score),
        need_score: small(l.need_score),
        need: l.need.clone(),
        score: Some(pb::ManScore {
            money: small(l.money_score),
            authority: small(l.authority_score),
            need: small(l.need_score),
            total_tenths: small(l.total_tenths),
            total: format!("{}.{}", total / 10, total % 10),
            annual_budget_minor: l.annual_budget_minor,
            special_budget_minor: l.special_budget_minor,
            financial_trend: trend_to_pb(&l.trend).into(),
            score_time: Some(timestamp(l.scored_at)),
        }),
        state: lead_state_to_pb(&l.state).into(),
        partner: if l.partner_id.is_empty() {
            String::new()
        } else {
            format!("partners/{}", l.partner_id)
        },
        accept_deadline: opt_timestamp(l.accept_deadline),
        assignment_reason: l.assignment_reason.clone(),
        outcome_reason: l.outcome_reason.clone(),
        offers: v
            .offers
            .iter()
            .map(|o| pb::LeadOffer {
                partner: format!("partners/{}", o.partner_id),
                reason: o.reason.clone(),
                offer_time: Some(timestamp(o.offered_at)),
                accept_deadline: Some(timestamp(o.accept_deadline)),
                outcome: o.outcome.clone(),
                outcome_reason: o.outcome_reason.clone(),
            })
            .collect(),
        create_time: Some(timestamp(l.created_at)),
        sales_rep: if l.rep_id.is_empty() {
            String::new()
        } else {
            RepId::from_stored(l.rep_id.clone()).resource_name()
        },
    }
}

/// A budget may be far above any order's amount.
const MAX_BUDGET_MINOR: i64 = 1_000_000_000_000_000_000;

fn budget(v: &mut Violations, field: &str, raw: i64) -> i64 {
    if !(0..=MAX_BUDGET_MINOR).contains(&raw) {
        v.add(field, format!("must be 0-{MAX_BUDGET_MINOR}"));
    }
    raw
}

pub(super) fn amount(v: &mut Violations, field: &str, raw: i64) -> i64 {
    if !(0..=MAX_AMOUNT_MINOR).contains(&raw) {
        v.add(field, format!("must be 0-{MAX_AMOUNT_MINOR}"));
    }
    raw
}

fn score(v: &mut Violations, field: &str, raw: i32) -> u8 {
    match u8::try_from(raw) {
        Ok(s @ 1..=5) => s,
        _ => {
            v.add(field, "must be 1-5");
            1
        }
    }
}

fn trend(v: &mut Violations, field: &str, raw: i32) -> Trend {
    trend_of_pb(raw).unwrap_or_else(|| {
        v.add(field, "must be positive, stable or negative");
        Trend::Stable
    })
}

fn parse_lead(req: &pb::CreateLeadRequest) -> ServiceResult<NewLead> {
    let Some(l) = req.lead.as_ref() else {
        return Err(ServiceError::invalid("lead", "is required"));
    };
    let mut v = Violations::new();
    let customer = customer(&mut v, "lead.customer", l.customer.as_ref());
    let class = class_of_pb(l.customer_class);
    if class.is_none() {
        v.add("lead.customer_class", "must be S, A, B or C");
    }
    let inputs = ManInputs {
        annual_budget_minor: budget(&mut v, "lead.annual_budget_minor", l.annual_budget_minor),
        special_budget_minor: budget(&mut v, "lead.special_budget_minor", l.special_budget_minor),
        trend: trend(&mut v, "lead.financial_trend", l.financial_trend),
        authority: score(&mut v, "lead.authority_score", l.authority_score),
        need: score(&mut v, "lead.need_score", l.need_score),
    };
    let need = v.text("lead.need", &l.need, 1000, false);
    v.finish()?;
    let class = class.ok_or_else(|| ServiceError::invalid("lead.customer_class", "is invalid"))?;
    Ok(NewLead {
        customer,
        class,
        inputs,
        need,
    })
}

fn parse_lead_update(req: &pb::UpdateLeadRequest) -> ServiceResult<(String, LeadChanges)> {
    let Some(l) = req.lead.as_ref() else {
        return Err(ServiceError::invalid("lead", "is required"));
    };
    let mut v = Violations::new();
    let id = v.field("lead.name", collection_id(&l.name, "leads"));
    let paths = req.update_mask.as_ref().map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field");
    }
    let mut changes = LeadChanges::default();
    for path in v.mask_paths("update_mask", paths).to_vec() {
        match path.as_str() {
            "annual_budget_minor" => {
                changes.annual_budget_minor =
                    Some(budget(&mut v, "lead.annual_budget_minor", l.annual_budget_minor));
            }
            "special_budget_minor" => {
                changes.special_budget_minor =
                    Some(budget(&mut v, "lead.special_budget_minor", l.special_budget_minor));
            }
            "financial_trend" => changes.trend = Some(trend(&mut v, "lead.financial_trend", l.financial_trend)),
            "authority_score" => changes.authority = Some(score(&mut v, "lead.authority_score", l.authority_score)),
            "need_score" => changes.need_score = Some(score(&mut v, "lead.need_score", l.need_score)),
            "need" => changes.need = Some(v.text("lead.need", &l.need, 1000, false)),
            other => v.add(
                "update_mask",
                format!("{other} cannot be updated (annual_budget_minor, special_budget_minor, financial_trend, authority_score, need_score, need)"),
            ),
        }
    }
    v.finish()?;
    let id = id.ok_or_else(|| ServiceError::invalid("lead.name", "is invalid"))?;
    Ok((id, changes))
}

fn lead_id(field: &str, name: &str) -> ServiceResult<String> {
    collection_id(name, "leads").map_err(|reason| ServiceError::invalid(field, reason))
}

#[tonic::async_trait]
impl LeadService for LeadApi {
    async fn create_lead(&self, request: Request<pb::CreateLeadRequest>) -> Rpc<pb::Lead> {
        let who = caller(&request, ADMIN)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreateLead", &who.owner, &req.request_id, &req)?;
        let new = parse_lead(&req)?;
        ok(self.app.create_lead(&who, new, key.as_ref(), lead_to_pb).await?)
    }

    async fn get_lead(&self, request: Request<pb::GetLeadRequest>) -> Rpc<pb::Lead> {
        let who = caller(&request, READ)?;
        let id = lead_id("name", &request.get_ref().name)?;
        ok(lead_to_pb(&self.app.lead(&who, &id).await?))
    }

    async fn list_leads(&self, request: Request<pb::ListLeadsRequest>) -> Rpc<pb::ListLeadsResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let state = lead_state_of_pb(req.state).map_err(|()| ServiceError::invalid("state", "must be a lead state"))?;
        let page = Page::parse(req.page_size, &req.page_token, &req.state.to_string())?;
        let (views, next_page_token) = self.app.list_leads(&who, state, &page).await?;
        ok(pb::ListLeadsResponse {
            leads: views.iter().map(lead_to_pb).collect(),
            next_page_token,
        })
    }

    async fn update_lead(&self, request: Request<pb::UpdateLeadRequest>) -> Rpc<pb::Lead> {
        let who = caller(&request, WRITE)?;
        let (id, changes) = parse_lead_update(request.get_ref())?;
        ok(lead_to_pb(&self.app.update_lead(&who, &id, changes).await?))
    }

    async fn assign_lead(&self, request: Request<pb::AssignLeadRequest>) -> Rpc<pb::Lead> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.check(
            lead_id("name", &req.name)
                .map_err(|_| retail_kit::error::Violation::new("name", "must be leads/{lead_id} with a UUID id")),
        );
        let rep = if req.sales_rep.is_empty() {
            None
        } else {
            v.field("sales_rep", RepId::parse_name(&req.sales_rep))
        };
        v.finish()?;
        let id = id.ok_or_else(|| ServiceError::invalid("name", "is invalid"))?;
        ok(lead_to_pb(&self.app.assign_lead(&who, &id, rep.as_ref()).await?))
    }

    async fn accept_lead(&self, request: Request<pb::AcceptLeadRequest>) -> Rpc<pb::Lead> {
        let who = caller(&request, WRITE)?;
        let id = lead_id("name", &request.get_ref().name)?;
        ok(lead_to_pb(&self.app.accept_lead(&who, &id).await?))
    }

    async fn decline_lead(&self, request: Request<pb::DeclineLeadRequest>) -> Rpc<pb::Lead> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.field("name", collection_id(&req.name, "leads"));
        let reason = v.text("reason", &req.reason, 500, true);
        v.finish()?;
        let id = id.ok_or_else(|| ServiceError::invalid("name", "is invalid"))?;
        ok(lead_to_pb(&self.app.decline_lead(&who, &id, &reason).await?))
    }

    async fn report_lead_outcome(&self, request: Request<pb::ReportLeadOutcomeRequest>) -> Rpc<pb::Lead> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.field("name", collection_id(&req.name, "leads"));
        let reason = v.text("reason", &req.reason, 500, !req.won);
        v.finish()?;
        let id = id.ok_or_else(|| ServiceError::invalid("name", "is invalid"))?;
        ok(lead_to_pb(
            &self.app.report_lead_outcome(&who, &id, req.won, &reason).await?,
        ))
    }
}

fn stage_of_pb(raw: i32) -> Option<Stage> {
    match pb::PipelineStage::try_from(raw) {
        Ok(pb::PipelineStage::Identified) => Some(Stage::Identified),
        Ok(pb::PipelineStage::Proposed) => Some(Stage::Proposed),
        Ok(pb::PipelineStage::Confirmed) => Some(Stage::Confirmed),
        Ok(pb::PipelineStage::Understood) => Some(Stage::Understood),
        Ok(pb::PipelineStage::Negotiating) => Some(Stage::Negotiating),
        Ok(pb::PipelineStage::Won) => Some(Stage::Won),
        Ok(pb::PipelineStage::Lost) => Some(Stage::Lost),
        _ => None,
    }
}

fn stage_to_pb(s: Stage) -> pb::PipelineStage {
    match s {
        Stage::Identified => pb::PipelineStage::Identified,
        Stage::Proposed => pb::PipelineStage::Proposed,
        Stage::Confirmed => pb::PipelineStage::Confirmed,
        Stage::Understood => pb::PipelineStage::Understood,
        Stage::Negotiating => pb::PipelineStage::Negotiating,
        Stage::Won => pb::PipelineStage::Won,
        Stage::Lost => pb::PipelineStage::Lost,
    }
}

fn stored_stage(raw: &str) -> i32 {
    Stage::parse(raw)
        .map_or(pb::PipelineStage::Unspecified, stage_to_pb)
        .into()
}

fn opportunity_to_pb(v: &OpportunityView) -> pb::Opportunity {
    let o = &v.opportunity;
    pb::Opportunity {
        name: opportunity_name(&o.partner_id, &o.id),
        title: o.title.clone(),
        customer: Some(customer_to_pb(&o.customer_name, &o.customer_region, &o.customer_tax_id)),
        sales_rep: if o.rep_id.is_empty() {
            String::new()
        } else {
            format!("salesReps/{}", o.rep_id)
        },
        amount_minor: o.amount_minor,
        lead: if o.lead_id.is_empty() {
            String::new()
        } else {
            format!("leads/{}", o.lead_id)
        },
        stage: stored_stage(&o.stage),
        stage_time: Some(timestamp(o.stage_since)),
        stage_changes: v
            .changes
            .iter()
            .map(|c| pb::StageChange {
                from_stage: stored_stage(&c.from_stage),
                to_stage: stored_stage(&c.to_stage),
                actor: c.actor.clone(),
                reason: c.reason.clone(),
                change_time: Some(timestamp(c.changed_at)),
            })
            .collect(),
        create_time: Some(timestamp(o.created_at)),
    }
}

fn parse_opportunity(req: &pb::CreateOpportunityRequest) -> ServiceResult<(PartnerId, NewOpportunity)> {
    let mut v = Violations::new();
    let partner = v.field("parent", PartnerId::parse_name(&req.parent));
    let Some(o) = req.opportunity.as_ref() else {
        v.add("opportunity", "is required");
        v.finish()?;
        return Err(ServiceError::invalid("opportunity", "is required"));
    };
    let title = parse::short_text(&mut v, "opportunity.title", &o.title, 200, true);
    let customer = customer(&mut v, "opportunity.customer", o.customer.as_ref());
    let rep = if o.sales_rep.is_empty() {
        None
    } else {
        v.field("opportunity.sales_rep", RepId::parse_name(&o.sales_rep))
    };
    let amount_minor = amount(&mut v, "opportunity.amount_minor", o.amount_minor);
    let lead_id = if o.lead.is_empty() {
        String::new()
    } else {
        v.field("opportunity.lead", collection_id(&o.lead, "leads"))
            .unwrap_or_default()
    };
    v.finish()?;
    let partner = partner.ok_or_else(|| ServiceError::invalid("parent", "is invalid"))?;
    Ok((
        partner,
        NewOpportunity {
            title,
            customer,
            rep,
            amount_minor,
            lead_id,
        },
    ))
}

fn line_to_pb(l: &StageLine) -> pb::StageReport {
    pb::StageReport {
        stage: stage_to_pb(l.stage).into(),
        reached: l.reached,
        current: l.current,
        conversion_to_next_bp: i32::try_from(l.conversion_to_next_bp).unwrap_or(0),
        completed_stays: l.completed_stays,
        mean_seconds_in_stage: l.mean_seconds,
    }
}

#[tonic::async_trait]
impl OpportunityService for OpportunityApi {
    async fn create_opportunity(&self, request: Request<pb::CreateOpportunityRequest>) -> Rpc<pb::Opportunity> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreateOpportunity", &who.owner, &req.request_id, &req)?;
        let (partner, new) = parse_opportunity(&req)?;
        ok(self
            .app
            .create_opportunity(&who, &partner, new, key.as_ref(), opportunity_to_pb)
            .await?)
    }

    async fn get_opportunity(&self, request: Request<pb::GetOpportunityRequest>) -> Rpc<pb::Opportunity> {
        let who = caller(&request, READ)?;
        let (partner, id) = child_id("name", &request.get_ref().name, "opportunities")?;
        ok(opportunity_to_pb(&self.app.opportunity(&who, &partner, &id).await?))
    }

    async fn list_opportunities(
        &self,
        request: Request<pb::ListOpportunitiesRequest>,
    ) -> Rpc<pb::ListOpportunitiesResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let partner = parse::partner_id("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, &req.parent)?;
        let (views, next_page_token) = self.app.list_opportunities(&who, &partner, &page).await?;
        ok(pb::ListOpportunitiesResponse {
            opportunities: views.iter().map(opportunity_to_pb).collect(),
            next_page_token,
        })
    }

    async fn move_opportunity(&self, request: Request<pb::MoveOpportunityRequest>) -> Rpc<pb::Opportunity> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let name = v.check(child_id("name", &req.name, "opportunities").map_err(|_| {
            retail_kit::error::Violation::new(
                "name",
                "must be partners/{partner_id}/opportunities/{opportunity_id} with a UUID id",
            )
        }));
        let stage = stage_of_pb(req.stage);
        if stage.is_none() {
            v.add("stage", "must be a pipeline stage");
        }
        let reason = v.text("reason", &req.reason, 500, stage == Some(Stage::Lost));
        v.finish()?;
        let ((partner, id), stage) = name
            .zip(stage)
            .ok_or_else(|| ServiceError::invalid("name", "is invalid"))?;
        ok(opportunity_to_pb(
            &self.app.move_opportunity(&who, &partner, &id, stage, &reason).await?,
        ))
    }

    async fn get_pipeline_report(&self, request: Request<pb::GetPipelineReportRequest>) -> Rpc<pb::PipelineReport> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let partner = v.field("partner", PartnerId::parse_name(&req.partner));
        let rep = if req.sales_rep.is_empty() {
            None
        } else {
            v.field("sales_rep", RepId::parse_name(&req.sales_rep))
        };
        v.finish()?;
        let partner = partner.ok_or_else(|| ServiceError::invalid("partner", "is invalid"))?;
        let lines = self.app.pipeline_report(&who, &partner, rep.as_ref()).await?;
        ok(pb::PipelineReport {
            partner: req.partner,
            sales_rep: req.sales_rep,
            stages: lines.iter().map(line_to_pb).collect(),
        })
    }
}

/// Visits and key customers.
#[derive(Debug, Clone)]
pub(crate) struct VisitApi {
    app: Arc<App>,
}

impl VisitApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn visit_to_pb(v: &store::visit::Model) -> pb::Visit {
    #[allow(clippy::cast_precision_loss)]
    let degrees = |e6: i64| e6 as f64 / 1_000_000.0;
    let coordinates = v.place.is_empty();
    pb::Visit {
        name: visit_name(&v.partner_id, &v.id),
        sales_rep: RepId::from_stored(v.rep_id.clone()).resource_name(),
        customer: Some(customer_to_pb(&v.customer_name, &v.customer_region, "")),
        place: v.place.clone(),
        latitude: if coordinates { degrees(v.latitude_e6) } else { 0.0 },
        longitude: if coordinates { degrees(v.longitude_e6) } else { 0.0 },
        check_in_time: Some(timestamp(v.check_in_at)),
        check_out_time: opt_timestamp(v.check_out_at),
        dwell_seconds: v.check_out_at.map_or(0, |out| (out - v.check_in_at).num_seconds()),
    }
}

fn key_customer_to_pb(k: &store::key_customer::Model) -> pb::KeyCustomer {
    pb::KeyCustomer {
        name: key_customer_name(&k.partner_id, &k.id),
        customer: Some(customer_to_pb(&k.customer_name, &k.customer_region, "")),
        cycle_days: i32::try_from(k.cycle_days).unwrap_or(i32::MAX),
        last_visit_time: opt_timestamp(k.last_visit_at),
    }
}

/// Micro-degrees of a coordinate within `limit` degrees.
fn coordinate(v: &mut Violations, field: &str, raw: f64, limit: f64) -> i64 {
    if !raw.is_finite() || raw.abs() > limit {
        v.add(field, format!("must be between -{limit} and {limit} degrees"));
        return 0;
    }
    #[allow(clippy::cast_possible_truncation)]
    let e6 = (raw * 1_000_000.0).round() as i64;
    e6
}

fn parse_visit(req: &pb::CheckInRequest) -> ServiceResult<(PartnerId, NewVisit)> {
    let mut v = Violations::new();
    let partner = v.field("parent", PartnerId::parse_name(&req.parent));
    let Some(visit) = req.visit.as_ref() else {
        v.add("visit", "is required");
        v.finish()?;
        return Err(ServiceError::invalid("visit", "is required"));
    };
    let rep = v.field("visit.sales_rep", RepId::parse_name(&visit.sales_rep));
    let customer = customer(&mut v, "visit.customer", visit.customer.as_ref());
    let place = parse::short_text(&mut v, "visit.place", &visit.place, 500, false);
    let has_coordinates = visit.latitude != 0.0 || visit.longitude != 0.0;
    let latitude_e6 = coordinate(&mut v, "visit.latitude", visit.latitude, 90.0);
    let longitude_e6 = coordinate(&mut v, "visit.longitude", visit.longitude, 180.0);
    let place = match (place.is_empty(), has_coordinates) {
        (false, false) => Place::Text(place),
        (true, true) => Place::Coordinates {
            latitude_e6,
            longitude_e6,
        },
        (true, false) => {
            v.add("visit.place", "is required (or latitude and longitude)");
            Place::Text(String::new())
        }
        (false, true) => {
            v.add("visit.place", "must be empty when latitude and longitude are given");
            Place::Text(String::new())
        }
    };
    v.finish()?;
    match (partner, rep) {
        (Some(partner), Some(rep)) => Ok((partner, NewVisit { rep, customer, place })),
        _ => Err(ServiceError::invalid("visit", "is invalid")),
    }
}

#[tonic::async_trait]
impl VisitService for VisitApi {
    async fn check_in(&self, request: Request<pb::CheckInRequest>) -> Rpc<pb::Visit> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CheckIn", &who.owner, &req.request_id, &req)?;
        let (partner, new) = parse_visit(&req)?;
        ok(self
            .app
            .check_in(&who, &partner, new, key.as_ref(), visit_to_pb)
            .await?)
    }

    async fn check_out(&self, request: Request<pb::CheckOutRequest>) -> Rpc<pb::Visit> {
        let who = caller(&request, WRITE)?;
        let (partner, id) = child_id("name", &request.get_ref().name, "visits")?;
        ok(visit_to_pb(&self.app.check_out(&who, &partner, &id).await?))
    }

    async fn list_visits(&self, request: Request<pb::ListVisitsRequest>) -> Rpc<pb::ListVisitsResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let partner = v.field("parent", PartnerId::parse_name(&req.parent));
        let rep = if req.sales_rep.is_empty() {
            None
        } else {
            v.field("sales_rep", RepId::parse_name(&req.sales_rep))
        };
        v.finish()?;
        let Some(partner) = partner else {
            return Err(ServiceError::invalid("parent", "is invalid").into());
        };
        let page = Page::parse(
            req.page_size,
            &req.page_token,
            &format!("{}|{}", req.parent, req.sales_rep),
        )?;
        let (rows, next_page_token) = self.app.list_visits(&who, &partner, rep.as_ref(), &page).await?;
        ok(pb::ListVisitsResponse {
            visits: rows.iter().map(visit_to_pb).collect(),
            next_page_token,
        })
    }

    async fn set_visit_cycle(&self, request: Request<pb::SetVisitCycleRequest>) -> Rpc<pb::KeyCustomer> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let partner = v.field("parent", PartnerId::parse_name(&req.parent));
        let k = req.key_customer.unwrap_or_default();
        if !(1..=366).contains(&k.cycle_days) {
            v.add("key_customer.cycle_days", "must be 1 to 366 days");
        }
        let paths = req.update_mask.as_ref().map(|m| m.paths.as_slice()).unwrap_or_default();
        if !paths.is_empty() {
            // A masked update of one key customer's cycle.
            if paths.iter().any(|p| p != "cycle_days") {
                v.add("update_mask", "only cycle_days can be updated");
            }
            let name = v.check(child_id("key_customer.name", &k.name, "keyCustomers").map_err(|_| {
                retail_kit::error::Violation::new(
                    "key_customer.name",
                    "must be partners/{partner_id}/keyCustomers/{key_customer_id} with a UUID id",
                )
            }));
            if let (Some(p), Some((of, _))) = (&partner, &name)
                && p != of
            {
                v.add("key_customer.name", "must be a key customer of the partner in parent");
            }
            v.finish()?;
            let Some((partner, id)) = name else {
                return Err(ServiceError::invalid("key_customer.name", "is invalid").into());
            };
            return ok(key_customer_to_pb(
                &self
                    .app
                    .update_visit_cycle(&who, &partner, &id, i64::from(k.cycle_days))
                    .await?,
            ));
        }
        let customer = customer(&mut v, "key_customer.customer", k.customer.as_ref());
        v.finish()?;
        let Some(partner) = partner else {
            return Err(ServiceError::invalid("parent", "is invalid").into());
        };
        ok(key_customer_to_pb(
            &self
                .app
                .set_visit_cycle(&who, &partner, customer, i64::from(k.cycle_days))
                .await?,
        ))
    }

    async fn get_rep_home(&self, request: Request<pb::GetRepHomeRequest>) -> Rpc<pb::RepHome> {
        let who = caller(&request, READ)?;
        let rep = RepId::parse_name(&request.get_ref().sales_rep).map_err(|e| ServiceError::invalid("sales_rep", e))?;
        let home = self.app.rep_home(&who, &rep).await?;
        let currency = self.app.rules.currency.clone();
        ok(pb::RepHome {
            sales_rep: RepId::from_stored(home.rep_id.clone()).resource_name(),
            targets: home
                .targets
                .iter()
                .map(|t| super::convert::target_to_pb(t, &currency))
                .collect(),
            open_opportunities: home
                .open_opportunities
                .iter()
                .map(|(stage, count, amount)| pb::StageCount {
                    stage: stage_to_pb(*stage).into(),
                    count: i32::try_from(*count).unwrap_or(i32::MAX),
                    amount_minor: *amount,
                })
                .collect(),
            open_leads: i32::try_from(home.open_leads).unwrap_or(i32::MAX),
            visits_this_week: i32::try_from(home.visits_this_week).unwrap_or(i32::MAX),
            overdue_key_customers: home.overdue.iter().map(key_customer_to_pb).collect(),
            assigned_leads: home
                .leads
                .iter()
                .map(|l| {
                    lead_to_pb(&LeadView {
                        lead: l.clone(),
                        offers: Vec::new(),
                    })
                })
                .collect(),
        })
    }

    async fn get_key_customer(&self, request: Request<pb::GetKeyCustomerRequest>) -> Rpc<pb::KeyCustomer> {
        let who = caller(&request, READ)?;
        let (partner, id) = child_id("name", &request.get_ref().name, "keyCustomers")?;
        ok(key_customer_to_pb(&self.app.key_customer(&who, &partner, &id).await?))
    }

    async fn list_key_customers(
        &self,
        request: Request<pb::ListKeyCustomersRequest>,
    ) -> Rpc<pb::ListKeyCustomersResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let partner = parse::partner_id("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, &req.parent)?;
        let (rows, next_page_token) = self.app.list_key_customers(&who, &partner, &page).await?;
        ok(pb::ListKeyCustomersResponse {
            key_customers: rows.iter().map(key_customer_to_pb).collect(),
            next_page_token,
        })
    }
}
