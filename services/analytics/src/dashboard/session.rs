//! Sessions: staff log in with identity's password login; the access token is
//! kept in an HttpOnly, SameSite=Strict cookie (`Secure` with
//! `http.secure_cookies`), the refresh token in another, and an expired access
//! token is renewed with the refresh token on the next page.
//!
//! CSRF: every form (login, logout) carries a token in a hidden field that must
//! equal the `rs_csrf` cookie (double submit), and a request whose `Origin` header
//! names another host is refused; the session cookies are SameSite=Strict on top,
//! so a cross-site request never carries them. Every other route is a GET that
//! changes nothing.
//!
//! Roles: `admin` and `analyst` see every page; `store_manager` sees the
//! aggregate pages of his own stores (the `stores` claim, narrowed by
//! [`crate::app::access::StoreScope`], the rule the gRPC API applies too) but
//! no member-level drill-down and no campaigns (brand-wide); `support` and
//! everyone else get 403. A token without the `analytics.read` scope gets 403 too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use rand::RngCore;
use retail_kit::auth::Principal;
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as ipb};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tonic::transport::Channel;

use super::{State, view};

pub const ACCESS_COOKIE: &str = "rs_access";
pub const REFRESH_COOKIE: &str = "rs_refresh";
pub const CSRF_COOKIE: &str = "rs_csrf";

/// A pair of tokens from identity.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

/// Why a login or refresh failed.
#[derive(Debug)]
pub enum SessionError {
    /// Wrong credentials, a disabled user, an expired or revoked refresh token.
    Denied,
    /// Identity could not be reached.
    Unavailable(String),
}

/// Identity's password login, refresh and logout.
#[async_trait::async_trait]
pub trait Sessions: Send + Sync + std::fmt::Debug {
    async fn login(&self, username: &str, password: &str) -> Result<Tokens, SessionError>;
    async fn refresh(&self, refresh_token: &str) -> Result<Tokens, SessionError>;
    async fn logout(&self, refresh_token: &str);
}

/// [`Sessions`] over identity's gRPC API.
#[derive(Debug, Clone)]
pub struct IdentitySessions {
    client: IdentityServiceClient<Channel>,
}

impl IdentitySessions {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: IdentityServiceClient::new(channel),
        }
    }
}

fn tokens_of(pair: Option<ipb::TokenPair>) -> Result<Tokens, SessionError> {
    let pair = pair.ok_or_else(|| SessionError::Unavailable("identity answered without tokens".into()))?;
    let secs = |d: Option<prost_types::Duration>| Duration::from_secs(d.map_or(0, |d| d.seconds.max(0) as u64));
    Ok(Tokens {
        access: pair.access_token,
        refresh: pair.refresh_token,
        access_ttl: secs(pair.expires_in),
        refresh_ttl: secs(pair.refresh_expires_in),
    })
}

fn status_to_error(status: tonic::Status) -> SessionError {
    match status.code() {
        tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::FailedPrecondition => SessionError::Denied,
        _ => SessionError::Unavailable(status.code().to_string()),
    }
}

#[async_trait::async_trait]
impl Sessions for IdentitySessions {
    async fn login(&self, username: &str, password: &str) -> Result<Tokens, SessionError> {
        let response = self
            .client
            .clone()
            .login(ipb::LoginRequest {
                username: username.to_owned(),
                password: password.to_owned(),
            })
            .await
            .map_err(status_to_error)?;
        tokens_of(response.into_inner().tokens)
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Tokens, SessionError> {
        let response = self
            .client
            .clone()
            .refresh_token(ipb::RefreshTokenRequest {
                refresh_token: refresh_token.to_owned(),
            })
            .await
            .map_err(status_to_error)?;
        tokens_of(response.into_inner().tokens)
    }

    async fn logout(&self, refresh_token: &str) {
        if let Err(status) = self
            .client
            .clone()
            .logout(ipb::LogoutRequest {
                refresh_token: refresh_token.to_owned(),
            })
            .await
        {
            tracing::warn!(code = %status.code(), "identity refused the logout");
        }
    }
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, Secure when configured.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool, http_only: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; Max-Age={}; SameSite=Strict", max_age.as_secs());
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    // Token characters are base64url and dots: always a valid header value.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An access token; `Debug` does not show it.
#[derive(Clone)]
pub struct AccessToken(pub String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

/// The signed-in user, as the verified access token says.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Arc<Principal>,
    /// The user's access token, for calls made on the user's behalf (membership's
    /// campaigns).
    pub access_token: AccessToken,
    /// The CSRF token of the logout form.
    pub csrf: String,
    /// Cookies to set on the response (a refreshed session, a new CSRF token).
    pub set_cookies: Vec<HeaderValue>,
}

/// What a page needs to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Aggregates: admin, analyst, store manager.
    Aggregates,
    /// Member-level rows: admin, analyst.
    Members,
    /// Brand-wide campaign results: admin, analyst.
    Campaigns,
}

pub fn allowed(principal: &Principal, access: Access) -> bool {
    if !principal.has_scope("analytics.read") {
        return false;
    }
    let has = |role: &str| principal.roles.iter().any(|r| r == role);
    match access {
        Access::Aggregates => has("admin") || has("analyst") || has("store_manager"),
        Access::Members | Access::Campaigns => has("admin") || has("analyst"),
    }
}

/// The session of a request: the access token verified, or renewed with the
/// refresh token; `Err` is the response to send instead (to the login page, or 403).
pub async fn viewer(state: &State, headers: &HeaderMap, access: Access) -> Result<Viewer, Response> {
    let secure = state.app.settings.http.secure_cookies;
    let mut set_cookies = Vec::new();
    let csrf = match cookie(headers, CSRF_COOKIE) {
        Some(c) => c.to_owned(),
        None => {
            let c = random_token();
            set_cookies.push(set_cookie(CSRF_COOKIE, &c, Duration::from_secs(86_400), secure, true));
            c
        }
    };
    let verified = match cookie(headers, ACCESS_COOKIE) {
        Some(token) => state.verifier.verify(token).await.ok().map(|p| (p, token.to_owned())),
        None => None,
    };
    let (principal, access_token) = match verified {
        Some(found) => found,
        None => {
            let Some(refresh) = cookie(headers, REFRESH_COOKIE) else {
                return Err(Redirect::to("/login").into_response());
            };
            match state.sessions.refresh(refresh).await {
                Ok(tokens) => {
                    let Ok(p) = state.verifier.verify(&tokens.access).await else {
                        return Err(clear_session(Redirect::to("/login").into_response(), secure));
                    };
                    set_cookies.extend(session_cookies(&tokens, secure));
                    (p, tokens.access)
                }
                Err(SessionError::Denied) => return Err(clear_session(Redirect::to("/login").into_response(), secure)),
                Err(SessionError::Unavailable(why)) => {
                    tracing::warn!(reason = %why, "refreshing a dashboard session failed");
                    return Err(view::error_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Identity is unavailable; try again shortly.",
                    ));
                }
            }
        }
    };
    if !allowed(&principal, access) {
        let mut response = view::error_page(StatusCode::FORBIDDEN, "Your role may not see this page.");
        append_cookies(&mut response, set_cookies);
        return Err(response);
    }
    Ok(Viewer {
        principal,
        access_token: AccessToken(access_token),
        csrf,
        set_cookies,
    })
}

pub fn append_cookies(response: &mut Response, cookies: Vec<HeaderValue>) {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
}

fn session_cookies(tokens: &Tokens, secure: bool) -> [HeaderValue; 2] {
    // The access cookie outlives the token a little: an expired token is renewed
    // with the refresh token, not sent to the login page.
    [
        set_cookie(
            ACCESS_COOKIE,
            &tokens.access,
            tokens.refresh_ttl.max(tokens.access_ttl),
            secure,
            true,
        ),
        set_cookie(REFRESH_COOKIE, &tokens.refresh, tokens.refresh_ttl, secure, true),
    ]
}

fn clear_session(mut response: Response, secure: bool) -> Response {
    append_cookies(
        &mut response,
        vec![
            set_cookie(ACCESS_COOKIE, "", Duration::ZERO, secure, true),
            set_cookie(REFRESH_COOKIE, "", Duration::ZERO, secure, true),
        ],
    );
    response
}

/// A state-changing request is accepted only from this host: an `Origin` header
/// (browsers send it on every POST) must name the host the request was sent to,
/// and the form's token must equal the CSRF cookie.
fn csrf_ok(headers: &HeaderMap, form_token: &str) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if host.is_empty() || origin_host != host {
            return false;
        }
    }
    match cookie(headers, CSRF_COOKIE) {
        Some(c) => !form_token.is_empty() && bool::from(c.as_bytes().ct_eq(form_token.as_bytes())),
        None => false,
    }
}

pub async fn login_page(AxState(state): AxState<State>, headers: HeaderMap) -> Response {
    render_login(&state, &headers, None, StatusCode::OK)
}

fn render_login(state: &State, headers: &HeaderMap, error: Option<&str>, status: StatusCode) -> Response {
    let secure = state.app.settings.http.secure_cookies;
    let (csrf, new) = match cookie(headers, CSRF_COOKIE) {
        Some(c) => (c.to_owned(), false),
        None => (random_token(), true),
    };
    let body = html! {
        section.login {
            h1 { "Sign in" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { "User name" input name="username" autocomplete="username" required; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut response = view::html_response(status, view::document("Sign in", None, body));
    if new {
        append_cookies(
            &mut response,
            vec![set_cookie(
                CSRF_COOKIE,
                &csrf,
                Duration::from_secs(86_400),
                secure,
                true,
            )],
        );
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(AxState(state): AxState<State>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return view::error_page(
            StatusCode::FORBIDDEN,
            "The form expired or came from another site; reload and try again.",
        );
    }
    if form.username.trim().is_empty() || form.password.is_empty() {
        return render_login(
            &state,
            &headers,
            Some("Enter your user name and password."),
            StatusCode::BAD_REQUEST,
        );
    }
    match state.sessions.login(form.username.trim(), &form.password).await {
        Ok(tokens) => {
            let mut response = Redirect::to("/").into_response();
            append_cookies(
                &mut response,
                session_cookies(&tokens, state.app.settings.http.secure_cookies).to_vec(),
            );
            response
        }
        Err(SessionError::Denied) => render_login(
            &state,
            &headers,
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(SessionError::Unavailable(why)) => {
            tracing::warn!(reason = %why, "dashboard login: identity unavailable");
            render_login(
                &state,
                &headers,
                Some("Identity is unavailable; try again shortly."),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(AxState(state): AxState<State>, headers: HeaderMap, Form(form): Form<LogoutForm>) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return view::error_page(
            StatusCode::FORBIDDEN,
            "The form expired or came from another site; reload and try again.",
        );
    }
    if let Some(refresh) = cookie(&headers, REFRESH_COOKIE) {
        state.sessions.logout(refresh).await;
    }
    clear_session(
        Redirect::to("/login").into_response(),
        state.app.settings.http.secure_cookies,
    )
}
