//! `MembershipService`: profiles, recognition, tags, consents, export and erasure.

use retail_kit::auth::{Principal, PrincipalKind};
use retail_kit::error::ServiceError;
use retail_kit::idempotency::IdempotencyKey;
use retail_proto::membership as pb;
use retail_proto::membership::membership_service_server::MembershipService;
use tonic::Request;

use super::mask::ReadMask;
use super::{MembershipApi, READ, Rpc, WRITE, convert, ok, parse};

#[tonic::async_trait]
impl MembershipService for MembershipApi {
    #[tracing::instrument(skip_all)]
    async fn register_member(&self, request: Request<pb::RegisterMemberRequest>) -> Rpc<pb::Member> {
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.RegisterMember", &caller, &req.request_id, &req)?;
        let registration = parse::registration(&req)?;
        ok(self
            .app
            .register(&caller, registration, key.as_ref(), Clone::clone)
            .await?)
    }

    async fn get_member(&self, request: Request<pb::GetMemberRequest>) -> Rpc<pb::Member> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.get_ref();
        let id = parse::member_id("name", &req.name)?;
        let mask = ReadMask::parse("read_mask", req.read_mask.as_ref())?;
        let member = self.app.get(&id, mask.read()).await?;
        ok(mask.apply(member))
    }

    async fn identify_member(&self, request: Request<pb::IdentifyMemberRequest>) -> Rpc<pb::Member> {
        Principal::of(&request)?.require_scope(READ)?;
        let id = parse::identifier("identifier", request.get_ref().identifier.as_ref())?;
        ok(self.app.identify(&id).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn identify_visitor(&self, request: Request<pb::IdentifyVisitorRequest>) -> Rpc<pb::IdentifyVisitorResponse> {
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.IdentifyVisitor", &caller, &req.request_id, &req)?;
        let visit = parse::visit(&req)?;
        ok(self.app.identify_visitor(visit, key.as_ref()).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn merge_members(&self, request: Request<pb::MergeMembersRequest>) -> Rpc<pb::MergeMembersResponse> {
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.MergeMembers", &caller, &req.request_id, &req)?;
        let merge = parse::merge(&req)?;
        ok(self.app.merge_members(&caller, merge, key.as_ref()).await?)
    }

    async fn list_members(&self, request: Request<pb::ListMembersRequest>) -> Rpc<pb::ListMembersResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let list = parse::list_members(request.get_ref())?;
        let (members, next_page_token) = self.app.list(list).await?;
        ok(pb::ListMembersResponse {
            members,
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_member(&self, request: Request<pb::UpdateMemberRequest>) -> Rpc<pb::Member> {
        Principal::of(&request)?.require_scope(WRITE)?;
        let (id, change) = parse::profile_change(request.into_inner())?;
        ok(self.app.update(&id, change).await?)
    }

    async fn add_identifier(&self, request: Request<pb::AddIdentifierRequest>) -> Rpc<pb::Member> {
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = parse::member_id("name", &req.name)?;
        let identifier = parse::identifier("identifier", req.identifier.as_ref())?;
        ok(self.app.add_identifier(&id, identifier).await?)
    }

    async fn remove_identifier(&self, request: Request<pb::RemoveIdentifierRequest>) -> Rpc<pb::Member> {
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = parse::member_id("name", &req.name)?;
        let identifier = parse::identifier("identifier", req.identifier.as_ref())?;
        ok(self.app.remove_identifier(&id, identifier).await?)
    }

    async fn set_tags(&self, request: Request<pb::SetTagsRequest>) -> Rpc<pb::Member> {
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let id = parse::member_id("name", &req.name)?;
        let (set, remove) = parse::tag_changes(&req)?;
        ok(self.app.set_tags(&caller, &id, set, remove).await?)
    }

    async fn set_consent(&self, request: Request<pb::SetConsentRequest>) -> Rpc<pb::Member> {
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = parse::member_id("name", &req.name)?;
        let (channel, granted, source) = parse::consent(&req)?;
        ok(self.app.set_consent(&id, channel, granted, source).await?)
    }

    async fn export_member(&self, request: Request<pb::ExportMemberRequest>) -> Rpc<pb::ExportMemberResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let id = parse::member_id("name", &request.get_ref().name)?;
        ok(convert::export(self.app.export(&id).await?)?)
    }

    #[tracing::instrument(skip_all)]
    async fn erase_member(&self, request: Request<pb::EraseMemberRequest>) -> Rpc<pb::EraseMemberResponse> {
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = parse::member_id("name", &req.name)?;
        parse::erasure_reason(&req.reason)?;
        self.app.erase(&id).await?;
        ok(pb::EraseMemberResponse {})
    }

    async fn get_contact(&self, request: Request<pb::GetContactRequest>) -> Rpc<pb::AnonymousContact> {
        staff(&request)?;
        let id = parse::contact_id("name", &request.get_ref().name)?;
        ok(self.app.anonymous_contact(&id).await?)
    }

    async fn list_contacts(&self, request: Request<pb::ListContactsRequest>) -> Rpc<pb::ListContactsResponse> {
        staff(&request)?;
        let (filter, page) = parse::list_contacts(request.get_ref())?;
        let (contacts, next_page_token) = self.app.anonymous_contacts(&filter, page).await?;
        ok(pb::ListContactsResponse {
            contacts,
            next_page_token,
        })
    }
}

/// Anonymous contacts are read by staff only: a staff user's token with
/// `membership.members.read`; PERMISSION_DENIED for partners and services.
fn staff<T>(request: &Request<T>) -> Result<(), tonic::Status> {
    let principal = Principal::of(request)?;
    principal.require_scope(READ)?;
    if principal.kind != PrincipalKind::Staff {
        return Err(ServiceError::PermissionDenied("anonymous contacts are read by staff only".into()).into());
    }
    Ok(())
}
