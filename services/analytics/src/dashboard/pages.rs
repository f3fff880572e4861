//! The pages. Each builds a [`Page`] from the use cases for the period and
//! filters in the URL; [`view::render`] turns it into HTML or CSV.

use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use retail_kit::error::{ServiceError, ServiceResult};

use super::State;
use super::query::{FILTERS, Params, date, date_time};
use super::session::{self, Access, Viewer};
use super::view::{self, Card, Cell, Page, Section, Table};
use crate::app::Period;
use crate::app::access::StoreScope;
use crate::domain::DAY;
use crate::domain::kpi::{Segment, growth};

/// Member rows per page of a segment's drill-down.
pub const MEMBERS_PER_PAGE: usize = 50;

pub fn money(minor: i64) -> String {
    format!("{:.2}", minor as f64 / 100.0)
}

fn money_f(minor: f64) -> String {
    format!("{:.2}", minor / 100.0)
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn num(v: f64) -> String {
    format!("{v:.2}")
}

fn link(text: impl Into<String>, href: String) -> Cell {
    Cell {
        text: text.into(),
        href: Some(href),
    }
}

/// Sends the page, or the error as a page.
fn finish(state: &State, built: ServiceResult<Page>, params: &Params, viewer: Viewer) -> Response {
    match built {
        Ok(page) => view::render(page, params, viewer, state.app.settings.http.refresh_secs),
        Err(ServiceError::InvalidArgument(violations)) => {
            let text: Vec<String> = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect();
            view::error_page(StatusCode::BAD_REQUEST, &text.join("; "))
        }
        Err(ServiceError::NotFound { entity, id }) => {
            view::error_page(StatusCode::NOT_FOUND, &format!("No {entity} {id}."))
        }
        Err(err) => {
            tracing::warn!(error = %err, "a dashboard page failed");
            view::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The figures could not be read; try again.",
            )
        }
    }
}

macro_rules! page_handler {
    ($(#[$doc:meta])* $name:ident, $access:expr, $build:ident) => {
        $(#[$doc])*
        pub async fn $name(
            AxState(state): AxState<State>,
            headers: HeaderMap,
            Query(params): Query<Params>,
        ) -> Response {
            let viewer = match session::viewer(&state, &headers, $access).await {
                Ok(v) => v,
                Err(response) => return response,
            };
            let scope = StoreScope::of(&viewer.principal);
            if !params.store.is_empty() && !scope.may_see(&params.store) {
                return view::error_page(StatusCode::FORBIDDEN, "This store is not one of yours.");
            }
            // A store manager sees his first store unless he picks another of his.
            let params = match scope.default_store() {
                Some(own) if params.store.is_empty() => Params {
                    store: own.to_owned(),
                    ..params
                },
                _ => params,
            };
            let built = match params.resolve(state.now()) {
                Ok(period) => $build(&state, &params, period, &scope).await,
                Err(problem) => $build(&state, &params, Period { start: 0, end: 1 }, &scope).await.map(|page| Page {
                    problem: Some(problem),
                    ..page
                }),
            };
            finish(&state, built, &params, viewer)
        }
    };
}

page_handler!(
    /// Revenue, orders, AOV, active members and NPS against the previous period.
    overview, Access::Aggregates, build_overview);
page_handler!(
    /// Sales over time by channel.
    sales, Access::Aggregates, build_sales);
page_handler!(
    /// The customer pyramid.
    pyramid, Access::Aggregates, build_pyramid);
page_handler!(
    /// RFM segments.
    rfm, Access::Aggregates, build_rfm);
page_handler!(
    /// Lifecycle distribution and flows.
    lifecycle, Access::Aggregates, build_lifecycle);
page_handler!(
    /// Cohort retention.
    cohorts, Access::Aggregates, build_cohorts);
page_handler!(
    /// A store's funnel and flagged SKUs.
    stores, Access::Aggregates, build_stores);
page_handler!(
    /// Staff metrics of a store.
    staff, Access::Aggregates, build_staff);
page_handler!(
    /// Product classes of a category.
    products, Access::Aggregates, build_products);
page_handler!(
    /// Partners and reps ranked by target attainment, revenue, leads, pipeline.
    partners, Access::Aggregates, build_partners);

const NO_STORE: &str = "No store is assigned to you.";

/// A store manager without stores: a section saying so instead of figures.
fn no_store_section(heading: &str) -> Section {
    Section {
        heading: heading.to_owned(),
        empty: Some(NO_STORE.to_owned()),
        ..Section::default()
    }
}

async fn sales_filters(state: &State, scope: &StoreScope) -> ServiceResult<Vec<(&'static str, Vec<String>)>> {
    let mut out = Vec::new();
    for f in FILTERS {
        let values = state.app.dimension_values(f).await?;
        out.push((f, if f == "store" { scope.narrow(values) } else { values }));
    }
    Ok(out)
}

fn card(id: &'static str, label: &str, current: String, previous: String, change: Option<f64>) -> Card {
    Card {
        id,
        label: label.to_owned(),
        value: current,
        previous,
        change,
    }
}

async fn build_overview(state: &State, params: &Params, period: Period, scope: &StoreScope) -> ServiceResult<Page> {
    let app = &state.app;
    let filters = sales_filters(state, scope).await?;
    let mut page = Page {
        path: "/",
        title: "Overview".into(),
        filters,
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    let (dim, key) = params.sales_dimension();
    if scope.require_dimension(dim, key).is_err() {
        page.sections.push(no_store_section("Headline figures"));
        return Ok(page);
    }
    let sales = app.sales(period, dim, key).await?;
    let members = app.member_stats(period).await?;
    let members_before = app.member_stats(period.previous()).await?;
    // Satisfaction is kept per channel, store and partner only.
    let (sdim, skey) = if matches!(dim, "channel" | "store" | "partner") {
        (dim, key)
    } else {
        ("all", "")
    };
    let nps = app.satisfaction(period, sdim, skey).await?;
    let nps_before = app.satisfaction(period.previous(), sdim, skey).await?;
    let (c, p) = (&sales.current, &sales.previous);
    let active_growth = growth(members.purchasing as f64, members_before.purchasing as f64);
    let cards = vec![
        card(
            "revenue",
            "Revenue",
            money(c.revenue),
            money(p.revenue),
            Some(sales.revenue_growth),
        ),
        card(
            "orders",
            "Orders",
            c.orders.to_string(),
            p.orders.to_string(),
            Some(sales.orders_growth),
        ),
        card(
            "aov",
            "Average order value",
            money_f(c.aov),
            money_f(p.aov),
            Some(sales.aov_growth),
        ),
        card(
            "active_members",
            "Active members (bought)",
            members.purchasing.to_string(),
            members_before.purchasing.to_string(),
            Some(active_growth),
        ),
        card(
            "nps",
            "NPS",
            format!("{:.1}", nps.nps.score),
            format!("{:.1}", nps_before.nps.score),
            None,
        ),
    ];
    let mut table = Table::new(
        "overview",
        format!("{} to {}", date(period.start), date(period.end - 1)),
        &["metric", "current", "previous", "change"],
    );
    let change = |g: f64| format!("{:+.1}%", g * 100.0);
    for card in &cards {
        let ch = match card.change {
            Some(g) => change(g),
            None => {
                // NPS: the difference in points.
                let (a, b) = (
                    card.value.parse::<f64>().unwrap_or(0.0),
                    card.previous.parse::<f64>().unwrap_or(0.0),
                );
                format!("{:+.1} pts", a - b)
            }
        };
        table.row(vec![
            card.id.into(),
            card.value.clone().into(),
            card.previous.clone().into(),
            ch.into(),
        ]);
    }
    for (id, cur, prev) in [
        ("customers", c.customers.to_string(), p.customers.to_string()),
        (
            "spend_per_customer",
            money_f(c.spend_per_customer),
            money_f(p.spend_per_customer),
        ),
        ("items_per_ticket", num(c.items_per_ticket), num(p.items_per_ticket)),
        ("refunded", money(c.refunded), money(p.refunded)),
        (
            "registered_members",
            members.registered.to_string(),
            members_before.registered.to_string(),
        ),
        (
            "monthly_active_members",
            members.monthly.to_string(),
            members_before.monthly.to_string(),
        ),
        (
            "marketable_members",
            members.marketable.to_string(),
            members_before.marketable.to_string(),
        ),
        (
            "nps_respondents",
            nps.nps.respondents.to_string(),
            nps_before.nps.respondents.to_string(),
        ),
        (
            "average_rating",
            num(nps.average_rating),
            num(nps_before.average_rating),
        ),
    ] {
        table.row(vec![id.into(), cur.into(), prev.into(), String::new().into()]);
    }
    let empty = (c.orders == 0 && p.orders == 0 && members.registered == 0)
        .then(|| "No sales and no members in this period yet.".to_owned());
    let chart = view::bar_chart(&[
        (
            "current".into(),
            c.revenue as f64 / 100.0,
            format!("revenue {}", money(c.revenue)),
        ),
        (
            "previous".into(),
            p.revenue as f64 / 100.0,
            format!("revenue {}", money(p.revenue)),
        ),
    ]);
    page.sections.push(Section {
        heading: match dim {
            "all" => "Headline figures".into(),
            d => format!("Headline figures, {d} {key}"),
        },
        cards,
        chart: Some(chart),
        table: Some(table),
        empty,
        extra: None,
    });
    Ok(page)
}

/// The buckets a period is drawn in: hours of a day, days up to two months,
/// weeks up to a year and a half, 30 days beyond.
fn buckets(period: Period) -> Vec<Period> {
    let len = period.end - period.start;
    let step = if len <= DAY {
        3_600
    } else if len <= 62 * DAY {
        DAY
    } else if len <= 550 * DAY {
        7 * DAY
    } else {
        30 * DAY
    };
    let mut out = Vec::new();
    let mut t = period.start;
    while t < period.end {
        out.push(Period {
            start: t,
            end: (t + step).min(period.end),
        });
        t += step;
    }
    out
}

async fn build_sales(state: &State, params: &Params, period: Period, scope: &StoreScope) -> ServiceResult<Page> {
    let app = &state.app;
    let filters = sales_filters(state, scope).await?;
    let channels = filters
        .iter()
        .find(|(f, _)| *f == "channel")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut page = Page {
        path: "/sales",
        title: "Sales over time".into(),
        filters,
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    // The rollups are kept per dimension: with a filter, one line for it;
    // without, one line per channel.
    let (dim, key) = params.sales_dimension();
    if scope.require_dimension(dim, key).is_err() {
        page.sections.push(no_store_section("Revenue by channel"));
        return Ok(page);
    }
    let series_keys: Vec<(String, &str, String)> = if dim == "all" {
        channels.iter().map(|c| (c.clone(), "channel", c.clone())).collect()
    } else {
        vec![(format!("{dim} {key}"), dim, key.to_owned())]
    };
    let buckets = buckets(period);
    let hourly = period.end - period.start <= DAY;
    let labels: Vec<String> = buckets
        .iter()
        .map(|b| {
            if hourly {
                date_time(b.start)[11..].to_owned()
            } else {
                date(b.start)
            }
        })
        .collect();
    let mut table = Table::new(
        "sales",
        "Revenue and orders per bucket",
        &["bucket", "series", "revenue", "orders", "units"],
    );
    let mut series = Vec::new();
    let mut total = 0i64;
    for (name, d, k) in &series_keys {
        let mut values = Vec::new();
        for (b, label) in buckets.iter().zip(&labels) {
            let f = app.sales_figures(*b, d, k).await?;
            total += f.orders;
            values.push(f.revenue as f64 / 100.0);
            table.row(vec![
                label.clone().into(),
                name.clone().into(),
                money(f.revenue).into(),
                f.orders.to_string().into(),
                f.units.to_string().into(),
            ]);
        }
        series.push((name.clone(), values));
    }
    let report = app.sales(period, dim, key).await?;
    let mut totals = Table::new(
        "sales_totals",
        "Period against the previous one",
        &["metric", "current", "previous", "change"],
    );
    for (m, c, p, g) in [
        (
            "revenue",
            money(report.current.revenue),
            money(report.previous.revenue),
            report.revenue_growth,
        ),
        (
            "orders",
            report.current.orders.to_string(),
            report.previous.orders.to_string(),
            report.orders_growth,
        ),
        (
            "aov",
            money_f(report.current.aov),
            money_f(report.previous.aov),
            report.aov_growth,
        ),
        (
            "items_per_ticket",
            num(report.current.items_per_ticket),
            num(report.previous.items_per_ticket),
            report.items_per_ticket_growth,
        ),
    ] {
        totals.row(vec![m.into(), c.into(), p.into(), format!("{:+.1}%", g * 100.0).into()]);
    }
    page.sections.push(Section {
        heading: "Revenue by channel".into(),
        chart: Some(view::line_chart(&labels, &series, "revenue")),
        table: Some(table),
        empty: (total == 0).then(|| "No paid orders in this period.".to_owned()),
        ..Section::default()
    });
    page.sections.push(Section {
        heading: "Against the previous period".into(),
        table: Some(totals),
        ..Section::default()
    });
    Ok(page)
}

async fn build_pyramid(state: &State, _params: &Params, period: Period, _scope: &StoreScope) -> ServiceResult<Page> {
    let mut page = Page {
        path: "/pyramid",
        title: "Customer pyramid".into(),
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    let layers = state.app.pyramid(period).await?;
    let before = state.app.pyramid(period.previous()).await?;
    let mut table = Table::new(
        "pyramid",
        "Layers by the period's spend (base: guests and first-time buyers)",
        &[
            "layer",
            "headcount",
            "share_of_customers",
            "revenue",
            "share_of_revenue",
            "orders",
            "aov",
            "previous_headcount",
            "previous_revenue",
        ],
    );
    let mut bars = Vec::new();
    for l in &layers {
        let prev = before.iter().find(|b| b.name == l.name);
        table.row(vec![
            l.name.into(),
            l.headcount.to_string().into(),
            pct(l.share_of_customers).into(),
            money(l.revenue).into(),
            pct(l.share_of_revenue).into(),
            l.orders.to_string().into(),
            money_f(l.aov).into(),
            prev.map_or(0, |p| p.headcount).to_string().into(),
            money(prev.map_or(0, |p| p.revenue)).into(),
        ]);
        bars.push((
            l.name.to_owned(),
            l.share_of_revenue,
            format!(
                "{}: {} customers, revenue {} ({} of revenue), AOV {}",
                l.name,
                l.headcount,
                money(l.revenue),
                pct(l.share_of_revenue),
                money_f(l.aov)
            ),
        ));
    }
    let empty = layers
        .iter()
        .all(|l| l.headcount == 0)
        .then(|| "No purchases in this period.".to_owned());
    page.sections.push(Section {
        heading: "Layers (share of revenue)".into(),
        chart: Some(view::pyramid_chart(&bars)),
        table: Some(table),
        empty,
        ..Section::default()
    });
    Ok(page)
}

/// RFM is computed as of the period's end (at most now) over the year before it.
fn rfm_as_of(state: &State, period: Period) -> i64 {
    (period.end - 1).min(state.now())
}

async fn build_rfm(state: &State, params: &Params, period: Period, _scope: &StoreScope) -> ServiceResult<Page> {
    let mut page = Page {
        path: "/rfm",
        title: "RFM segments".into(),
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    let as_of = rfm_as_of(state, period);
    let (segments, means) = state.app.rfm_distribution(as_of, 365).await?;
    let mut table = Table::new(
        "rfm",
        format!("Members who bought in the 365 days to {}", date(as_of)),
        &["segment", "members", "spend"],
    );
    let mut bars = Vec::new();
    let total: i64 = segments.iter().map(|s| s.1).sum();
    for (segment, members, spend) in &segments {
        let name = segment.as_str();
        table.row(vec![
            link(name, format!("/rfm/{name}{}", params.with(&[("page", "")]))),
            members.to_string().into(),
            money(*spend).into(),
        ]);
        bars.push((
            name.to_owned(),
            *members as f64,
            format!("{name}: {members} members, spend {}", money(*spend)),
        ));
    }
    page.sections.push(Section {
        heading: "Members per segment".into(),
        cards: vec![
            card("mean_r", "Mean R score", num(means.0), String::new(), None),
            card("mean_f", "Mean F score", num(means.1), String::new(), None),
            card("mean_m", "Mean M score", num(means.2), String::new(), None),
        ],
        chart: Some(view::bar_chart(&bars)),
        table: Some(table),
        empty: (total == 0).then(|| "No member bought in the year before this period's end.".to_owned()),
        extra: None,
    });
    Ok(page)
}

/// One segment's members, paged: ids and their RFM figures only (analytics holds
/// no names or contact data). Admins and analysts only.
pub async fn rfm_members(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path(segment): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let viewer = match session::viewer(&state, &headers, Access::Members).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let Some(seg) = Segment::parse(&segment) else {
        return view::error_page(StatusCode::NOT_FOUND, "No such segment.");
    };
    let built = match params.resolve(state.now()) {
        Ok(period) => build_members(&state, &params, period, seg).await,
        Err(problem) => Ok(Page {
            path: "/rfm",
            title: format!("Segment {}", seg.as_str()),
            problem: Some(problem),
            ..Page::default()
        }),
    };
    finish(&state, built, &params, viewer)
}

async fn build_members(state: &State, params: &Params, period: Period, seg: Segment) -> ServiceResult<Page> {
    let as_of = rfm_as_of(state, period);
    let (members, _) = state.app.rfm(as_of, 365).await?;
    let of: Vec<_> = members.iter().filter(|m| m.score.segment == seg).collect();
    let page_no = params.page_number();
    let pages = of.len().div_ceil(MEMBERS_PER_PAGE).max(1);
    let shown = of.iter().skip((page_no - 1) * MEMBERS_PER_PAGE).take(MEMBERS_PER_PAGE);
    let mut table = Table::new(
        "members",
        format!("{} members, page {page_no} of {pages}", of.len()),
        &[
            "member_id",
            "recency_days",
            "frequency",
            "monetary",
            "r",
            "f",
            "m",
            "cycle_days",
            "next_purchase",
        ],
    );
    for m in shown {
        table.row(vec![
            m.member.clone().into(),
            m.recency_days.to_string().into(),
            m.frequency.to_string().into(),
            money(m.monetary).into(),
            m.score.r.to_string().into(),
            m.score.f.to_string().into(),
            m.score.m.to_string().into(),
            m.cycle_days.map_or_else(String::new, |c| format!("{c:.1}")).into(),
            m.next_purchase.map_or_else(String::new, date).into(),
        ]);
    }
    let prev = (page_no > 1).then(|| params.with(&[("page", &(page_no - 1).to_string())]));
    let next = (page_no < pages).then(|| params.with(&[("page", &(page_no + 1).to_string())]));
    let pager = html! {
        p.pager {
            a href={ "/rfm" (params.with(&[("page", "")])) } { "All segments" }
            @if let Some(p) = &prev { a rel="prev" href=(p) { "Previous page" } }
            @if let Some(n) = &next { a rel="next" href=(n) { "Next page" } }
        }
    };
    Ok(Page {
        path: "/rfm",
        title: format!("Segment {}", seg.as_str()),
        sections: vec![Section {
            heading: "Members".into(),
            extra: Some(pager),
            empty: of.is_empty().then(|| "No member in this segment.".to_owned()),
            table: Some(table),
            ..Section::default()
        }],
        ..Page::default()
    })
}

async fn build_lifecycle(state: &State, _params: &Params, period: Period, _scope: &StoreScope) -> ServiceResult<Page> {
    let mut page = Page {
        path: "/lifecycle",
        title: "Lifecycle".into(),
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    let l = state.app.lifecycle(period, 90).await?;
    let mut table = Table::new(
        "lifecycle",
        format!("Members per state on {}", date(period.end - 1)),
        &["state", "members"],
    );
    let mut bars = Vec::new();
    for (s, n) in &l.distribution {
        table.row(vec![s.as_str().into(), n.to_string().into()]);
        bars.push((s.as_str().to_owned(), *n as f64, format!("{}: {n} members", s.as_str())));
    }
    let mut flows = Table::new(
        "flows",
        "From the period's start to its end",
        &["from", "to", "members", "direction"],
    );
    for (from, to, n) in &l.flows {
        flows.row(vec![
            from.as_str().into(),
            to.as_str().into(),
            n.to_string().into(),
            crate::domain::lifecycle::direction(*from, *to).into(),
        ]);
    }
    let total: i64 = l.distribution.iter().map(|d| d.1).sum();
    page.sections.push(Section {
        heading: "Distribution".into(),
        chart: Some(view::bar_chart(&bars)),
        table: Some(table),
        empty: (total == 0).then(|| "No members yet.".to_owned()),
        ..Section::default()
    });
    page.sections.push(Section {
        heading: "Flows".into(),
        empty: l.flows.is_empty().then(|| "No member changed state.".to_owned()),
        table: Some(flows),
        ..Section::default()
    });
    Ok(page)
}

async fn build_cohorts(state: &State, _params: &Params, period: Period, _scope: &StoreScope) -> ServiceResult<Page> {
    let mut page = Page {
        path: "/cohorts",
        title: "Cohort retention".into(),
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    // Cohorts need months: the heat map covers at least the last twelve.
    let start = period.start.min(period.end - 365 * DAY);
    let s = state.app.stickiness(Period { start, end: period.end }, 90).await?;
    let columns = s.cohorts.iter().map(|c| c.retention.len()).max().unwrap_or(0);
    let mut headers: Vec<String> = vec!["cohort".into(), "customers".into()];
    headers.extend((1..=columns).map(|k| format!("m+{k}")));
    let mut table = Table {
        id: "cohorts",
        caption: "Share of each month's first-time buyers who bought again k months later".into(),
        headers,
        rows: Vec::new(),
    };
    let mut rows = Vec::new();
    for c in &s.cohorts {
        let mut cells: Vec<Cell> = vec![c.month.clone().into(), c.customers.to_string().into()];
        cells.extend(c.retention.iter().map(|r| Cell::from(pct(*r))));
        table.rows.push(cells);
        rows.push((c.month.clone(), c.retention.clone()));
    }
    page.sections.push(Section {
        heading: "Retention by cohort".into(),
        cards: vec![
            card(
                "repeat_rate",
                "Repeat purchase rate",
                pct(s.repeat_rate),
                String::new(),
                None,
            ),
            card(
                "active_arpu",
                "Active ARPU",
                money_f(s.active_arpu),
                String::new(),
                None,
            ),
            card("churn_rate", "Churn rate", pct(s.churn_rate), String::new(), None),
        ],
        chart: Some(view::heat_map(&rows, columns)),
        empty: s
            .cohorts
            .iter()
            .all(|c| c.customers == 0)
            .then(|| "No first purchases in these months.".to_owned()),
        table: Some(table),
        extra: None,
    });
    Ok(page)
}

/// The store asked for, or the first one known (of the viewer's own stores).
async fn chosen_store(state: &State, params: &Params, scope: &StoreScope) -> ServiceResult<(Vec<String>, String)> {
    let stores = scope.narrow(state.app.dimension_values("store").await?);
    let store = if params.store.is_empty() {
        stores.first().cloned().unwrap_or_default()
    } else {
        params.store.clone()
    };
    Ok((stores, store))
}

async fn build_stores(state: &State, params: &Params, period: Period, scope: &StoreScope) -> ServiceResult<Page> {
    let (stores, store) = chosen_store(state, params, scope).await?;
    let mut page = Page {
        path: "/stores",
        title: format!("Store funnel {store}"),
        filters: vec![("store", stores)],
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    if store.is_empty() {
        page.sections.push(Section {
            heading: "Funnel".into(),
            empty: Some(if scope.is_restricted() {
                NO_STORE.into()
            } else {
                "No store has reported touchpoints yet.".into()
            }),
            ..Section::default()
        });
        return Ok(page);
    }
    let f = state.app.store_funnel(period, &store).await?;
    let b = state.app.store_funnel(period.previous(), &store).await?;
    let cards = vec![
        card(
            "entered",
            "Entered",
            f.entered.to_string(),
            b.entered.to_string(),
            Some(growth(f.entered as f64, b.entered as f64)),
        ),
        card("entry_rate", "Entry rate", pct(f.entry_rate), pct(b.entry_rate), None),
        card("touch_rate", "Touch rate", pct(f.touch_rate), pct(b.touch_rate), None),
        card(
            "try_on_rate",
            "Try-on rate",
            pct(f.try_on_rate),
            pct(b.try_on_rate),
            None,
        ),
        card(
            "receipts",
            "Receipts",
            f.receipts.to_string(),
            b.receipts.to_string(),
            Some(growth(f.receipts as f64, b.receipts as f64)),
        ),
        card(
            "transaction_seconds",
            "Avg transaction (s)",
            format!("{:.0}", f.average_transaction_seconds),
            format!("{:.0}", b.average_transaction_seconds),
            None,
        ),
        card(
            "reception_seconds",
            "Avg reception (s)",
            format!("{:.0}", f.average_reception_seconds),
            format!("{:.0}", b.average_reception_seconds),
            None,
        ),
    ];
    let mut places = Table::new(
        "funnel",
        "Rates per aisle, floor and zone",
        &["rate", "place", "base", "count", "share"],
    );
    let mut bars = vec![
        (
            "passed by".to_owned(),
            f.passed_by as f64,
            format!("passed by: {}", f.passed_by),
        ),
        (
            "entered".to_owned(),
            f.entered as f64,
            format!("entered: {} ({})", f.entered, pct(f.entry_rate)),
        ),
    ];
    for (kind, list) in [
        ("pass_through", &f.pass_through),
        ("upstairs", &f.upstairs),
        ("dwell", &f.dwell),
        ("purchase", &f.purchase),
    ] {
        for p in list {
            places.row(vec![
                kind.into(),
                p.place.clone().into(),
                p.base.to_string().into(),
                p.count.to_string().into(),
                pct(p.rate).into(),
            ]);
            if kind == "dwell" {
                bars.push((
                    format!("stayed {}", p.place),
                    p.count as f64,
                    format!("zone {}: {} of {} stayed ({})", p.place, p.count, p.base, pct(p.rate)),
                ));
            }
        }
    }
    page.sections.push(Section {
        heading: "Funnel".into(),
        cards,
        chart: Some(view::bar_chart(&bars)),
        empty: (f.passed_by == 0 && f.entered == 0 && f.receipts == 0)
            .then(|| "No touchpoints from this store in this period.".to_owned()),
        table: Some(places),
        extra: None,
    });
    let skus = state.app.sku_flags(period, &store, 0.1, 0.5).await?;
    let mut flagged = Table::new(
        "skus",
        "SKUs, flagged first (high try-on or touch rate, low conversion)",
        &[
            "sku",
            "try_on_flag",
            "touch_flag",
            "triers",
            "try_on_rate",
            "try_on_conversion",
            "touchers",
            "touch_rate",
            "touch_conversion",
        ],
    );
    let mut sorted: Vec<_> = skus.iter().collect();
    sorted.sort_by_key(|s| (!(s.try_on_flag || s.touch_flag), s.sku.clone()));
    for s in sorted {
        flagged.row(vec![
            s.sku.clone().into(),
            if s.try_on_flag { "flagged" } else { "" }.into(),
            if s.touch_flag { "flagged" } else { "" }.into(),
            s.triers.to_string().into(),
            pct(s.try_on_rate).into(),
            pct(s.try_on_conversion).into(),
            s.touchers.to_string().into(),
            pct(s.touch_rate).into(),
            pct(s.touch_conversion).into(),
        ]);
    }
    page.sections.push(Section {
        heading: "SKUs".into(),
        empty: skus.is_empty().then(|| "No SKU was tried on or touched.".to_owned()),
        table: Some(flagged),
        ..Section::default()
    });
    Ok(page)
}

async fn build_staff(state: &State, params: &Params, period: Period, scope: &StoreScope) -> ServiceResult<Page> {
    let (stores, store) = chosen_store(state, params, scope).await?;
    let mut page = Page {
        path: "/staff",
        title: format!("Staff {store}"),
        filters: vec![("store", stores)],
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    let staff = if store.is_empty() {
        Vec::new()
    } else {
        state.app.staff(period, &store).await?
    };
    let mut table = Table::new(
        "staff",
        "Per employee",
        &[
            "staff",
            "steps",
            "customers_served",
            "products_shown",
            "try_ons_given",
            "receipts",
            "sales",
            "conversion",
        ],
    );
    let mut bars = Vec::new();
    for s in &staff {
        table.row(vec![
            s.staff.clone().into(),
            s.steps.to_string().into(),
            s.served.to_string().into(),
            s.shown.to_string().into(),
            s.try_ons.to_string().into(),
            s.receipts.to_string().into(),
            money(s.sales).into(),
            pct(s.conversion).into(),
        ]);
        bars.push((
            s.staff.clone(),
            s.sales as f64 / 100.0,
            format!(
                "{}: sales {}, conversion {}",
                s.staff,
                money(s.sales),
                pct(s.conversion)
            ),
        ));
    }
    page.sections.push(Section {
        heading: "Sales per employee".into(),
        chart: Some(view::bar_chart(&bars)),
        empty: staff
            .is_empty()
            .then(|| "No staff-device events from this store in this period.".to_owned()),
        table: Some(table),
        ..Section::default()
    });
    Ok(page)
}

async fn build_products(state: &State, params: &Params, period: Period, _scope: &StoreScope) -> ServiceResult<Page> {
    let categories = state.app.dimension_values("category").await?;
    let category = if params.category.is_empty() {
        categories.first().cloned().unwrap_or_default()
    } else {
        params.category.clone()
    };
    let mut page = Page {
        path: "/products",
        title: format!("Product classes {category}"),
        filters: vec![("category", categories)],
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    let (classes, median_ctr, median_units) = if category.is_empty() {
        (Vec::new(), 0.0, 0.0)
    } else {
        state.app.product_classes(period, &category).await?
    };
    let mut table = Table::new(
        "classes",
        "In display order: A, B, C, D",
        &["sku", "class", "click_through_rate", "units"],
    );
    let mut counts = [0i64; 4];
    for c in &classes {
        table.row(vec![
            c.sku.clone().into(),
            c.class.into(),
            pct(c.ctr).into(),
            c.units.to_string().into(),
        ]);
        if let Some(i) = ["A", "B", "C", "D"].iter().position(|k| *k == c.class) {
            counts[i] += 1;
        }
    }
    let bars: Vec<_> = ["A", "B", "C", "D"]
        .iter()
        .zip(counts)
        .map(|(k, n)| ((*k).to_owned(), n as f64, format!("class {k}: {n} SKUs")))
        .collect();
    page.sections.push(Section {
        heading: "SKUs per class".into(),
        cards: vec![
            card(
                "median_ctr",
                "Median click-through",
                pct(median_ctr),
                String::new(),
                None,
            ),
            card("median_units", "Median units", num(median_units), String::new(), None),
        ],
        chart: Some(view::bar_chart(&bars)),
        empty: classes
            .is_empty()
            .then(|| "No SKU of this category was shown or sold.".to_owned()),
        table: Some(table),
        extra: None,
    });
    Ok(page)
}

/// The targets of one kind of subject running at `as_of`, as a section: their
/// attainment and projection side by side, and the ranking table.
fn target_section(
    kind: &str,
    id: &'static str,
    heading: &str,
    targets: &[crate::app::partners::TargetStanding],
    as_of: i64,
) -> Section {
    let subject = |t: &crate::app::partners::TargetStanding| {
        if kind == "rep" {
            format!("{}/{}", t.partner, t.rep)
        } else {
            t.partner.clone()
        }
    };
    let mut table = Table::new(
        id,
        format!("Targets running on {}, ranked among their peers", date_time(as_of)),
        &[
            "rank",
            "peers",
            if kind == "rep" { "partner/rep" } else { "partner" },
            "level",
            "period",
            "from",
            "target",
            "actual",
            "attainment",
            "projected",
            "projected_attainment",
        ],
    );
    let mut rows = Vec::new();
    for t in targets {
        let who = subject(t);
        table.row(vec![
            t.rank.to_string().into(),
            t.peers.to_string().into(),
            who.clone().into(),
            t.level.clone().into(),
            t.period_kind.clone().into(),
            date(t.start).into(),
            money(t.amount).into(),
            money(t.actual).into(),
            pct(t.attainment).into(),
            money(t.projected).into(),
            pct(t.projected_attainment).into(),
        ]);
        let label = format!("{} {who}", t.rank);
        rows.push((
            label,
            [t.attainment, t.projected_attainment],
            [
                format!(
                    "{who}: attainment {} ({} of {})",
                    pct(t.attainment),
                    money(t.actual),
                    money(t.amount)
                ),
                format!(
                    "{who}: projected {} ({})",
                    pct(t.projected_attainment),
                    money(t.projected)
                ),
            ],
        ));
    }
    Section {
        heading: heading.to_owned(),
        chart: Some(view::paired_bar_chart(["attainment", "projected"], &rows, Some(1.0))),
        empty: targets
            .is_empty()
            .then(|| "No target of this kind runs at the period's end.".to_owned()),
        table: Some(table),
        ..Section::default()
    }
}

async fn build_partners(state: &State, params: &Params, period: Period, scope: &StoreScope) -> ServiceResult<Page> {
    let partners = state.app.dimension_values("partner").await?;
    let mut page = Page {
        path: "/partners",
        title: "Partner ranking".into(),
        filters: vec![("partner", partners.clone())],
        ..Page::default()
    };
    if period.end - period.start <= 1 {
        return Ok(page);
    }
    let partner = params.partner.as_str();
    // Targets running at the period's end, or now for a period that runs on.
    let as_of = state.now().min(period.end);
    let standings = state.app.target_standings(as_of, "partner", "", partner).await?;
    page.sections.push(target_section(
        "partner",
        "targets",
        "Partner target attainment and projection",
        &standings,
        as_of,
    ));
    let reps = state.app.target_standings(as_of, "rep", "", partner).await?;
    page.sections.push(target_section(
        "rep",
        "reps",
        "Sales rep target attainment and projection",
        &reps,
        as_of,
    ));

    // Sales per partner are summed over every store: not a store manager's.
    let mut ranked = Vec::new();
    for p in partners
        .iter()
        .filter(|p| partner.is_empty() || p.as_str() == partner)
        .filter(|_| !scope.is_restricted())
    {
        let report = state.app.sales(period, "partner", p).await?;
        ranked.push((p.clone(), report));
    }
    ranked.sort_by(|a, b| b.1.current.revenue.cmp(&a.1.current.revenue).then(a.0.cmp(&b.0)));
    let mut table = Table::new(
        "partners",
        "By revenue in the period",
        &["rank", "partner", "revenue", "orders", "aov", "revenue_growth"],
    );
    let mut bars = Vec::new();
    for (i, (partner, r)) in ranked.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string().into(),
            partner.clone().into(),
            money(r.current.revenue).into(),
            r.current.orders.to_string().into(),
            money_f(r.current.aov).into(),
            format!("{:+.1}%", r.revenue_growth * 100.0).into(),
        ]);
        bars.push((
            partner.clone(),
            r.current.revenue as f64 / 100.0,
            format!("{partner}: revenue {}", money(r.current.revenue)),
        ));
    }
    page.sections.push(Section {
        heading: "Revenue per partner".into(),
        chart: Some(view::bar_chart(&bars)),
        empty: if scope.is_restricted() {
            Some("Sales per partner span every store; analysts see them.".to_owned())
        } else {
            ranked
                .iter()
                .all(|r| r.1.current.orders == 0)
                .then(|| "No partner sales in this period.".to_owned())
        },
        table: Some(table),
        ..Section::default()
    });

    let (total, by_partner) = state.app.lead_conversion(period, partner).await?;
    let mut leads = Table::new(
        "leads",
        "Leads offered in the period and what became of them",
        &[
            "partner",
            "offered",
            "accepted",
            "declined",
            "timed_out",
            "won",
            "lost",
            "acceptance_rate",
            "decline_rate",
            "timeout_rate",
            "win_rate",
        ],
    );
    let mut lead_bars = Vec::new();
    // With a partner filter the total is that partner's own row.
    let total_row = partner.is_empty().then_some(&total);
    for l in by_partner.iter().chain(total_row) {
        let who = if l.partner.is_empty() {
            "all"
        } else {
            l.partner.as_str()
        };
        leads.row(vec![
            who.into(),
            l.offered.to_string().into(),
            l.accepted.to_string().into(),
            l.declined.to_string().into(),
            l.timed_out.to_string().into(),
            l.won.to_string().into(),
            l.lost.to_string().into(),
            pct(l.acceptance_rate).into(),
            pct(l.decline_rate).into(),
            pct(l.timeout_rate).into(),
            pct(l.win_rate).into(),
        ]);
        lead_bars.push((
            format!("{who} accepted"),
            l.acceptance_rate * 100.0,
            format!(
                "{who}: {} of {} offers accepted ({})",
                l.accepted,
                l.offered,
                pct(l.acceptance_rate)
            ),
        ));
    }
    page.sections.push(Section {
        heading: "Lead conversion".into(),
        cards: vec![
            card(
                "lead_acceptance",
                "Accepted",
                pct(total.acceptance_rate),
                String::new(),
                None,
            ),
            card("lead_decline", "Declined", pct(total.decline_rate), String::new(), None),
            card(
                "lead_timeout",
                "Timed out",
                pct(total.timeout_rate),
                String::new(),
                None,
            ),
            card("lead_win", "Won of accepted", pct(total.win_rate), String::new(), None),
        ],
        chart: Some(view::bar_chart(&lead_bars)),
        empty: (total.offered == 0 && total.won == 0 && total.lost == 0)
            .then(|| "No lead was offered in this period.".to_owned()),
        table: Some(leads),
        extra: None,
    });

    let stages = state.app.pipeline_conversion(period, partner).await?;
    let mut pipeline = Table::new(
        "pipeline",
        "Opportunities that reached each stage in the period, and what became of them by its end",
        &["stage", "reached", "advanced", "lost", "conversion", "average_days"],
    );
    let mut funnel = Vec::new();
    for st in &stages {
        pipeline.row(vec![
            st.stage.clone().into(),
            st.reached.to_string().into(),
            st.advanced.to_string().into(),
            st.lost.to_string().into(),
            pct(st.conversion).into(),
            num(st.average_days).into(),
        ]);
        funnel.push((
            st.stage.clone(),
            st.reached as f64,
            format!(
                "{}: {} reached, {} advanced ({})",
                st.stage,
                st.reached,
                st.advanced,
                pct(st.conversion)
            ),
        ));
    }
    page.sections.push(Section {
        heading: "Pipeline conversion".into(),
        chart: Some(view::bar_chart(&funnel)),
        empty: stages
            .iter()
            .all(|s| s.reached == 0)
            .then(|| "No opportunity changed stage in this period.".to_owned()),
        table: Some(pipeline),
        ..Section::default()
    });
    Ok(page)
}

/// Campaigns per page of the campaigns list.
pub const CAMPAIGNS_PER_PAGE: i32 = 20;

/// Campaign results: membership's campaigns, newest first, each with its report
/// (reached against control), read with the viewer's own token, and under them
/// analytics' own wake-up and reactivation rates of the period. Brand-wide, so
/// admins and analysts only.
pub async fn campaigns(AxState(state): AxState<State>, headers: HeaderMap, Query(params): Query<Params>) -> Response {
    let viewer = match session::viewer(&state, &headers, Access::Campaigns).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let built = match params.resolve(state.now()) {
        Ok(period) => build_campaigns(&state, &params, period, &viewer).await,
        Err(problem) => Ok(Page {
            path: "/campaigns",
            title: "Campaign results".into(),
            problem: Some(problem),
            ..Page::default()
        }),
    };
    finish(&state, built, &params, viewer)
}

fn bp(v: i64) -> String {
    pct(v as f64 / 10_000.0)
}

/// At most `n` characters, with an ellipsis when cut.
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

async fn build_campaigns(state: &State, params: &Params, period: Period, viewer: &Viewer) -> ServiceResult<Page> {
    use super::campaigns::CampaignsError;
    let mut page = Page {
        path: "/campaigns",
        title: "Campaign results".into(),
        ..Page::default()
    };
    let Some(source) = &state.campaigns else {
        page.problem = Some(
            "Campaign results come from membership, and no membership address (sources.membership_url) is configured."
                .into(),
        );
        page.status = Some(StatusCode::SERVICE_UNAVAILABLE);
        return Ok(page);
    };
    let listed = match source
        .list(&viewer.access_token.0, CAMPAIGNS_PER_PAGE, &params.page_token)
        .await
    {
        Ok(listed) => listed,
        Err(err) => {
            let (status, message) = match err {
                CampaignsError::Denied => (
                    StatusCode::FORBIDDEN,
                    "Membership refused to show you campaigns (it needs the scope membership.engagement.read)."
                        .to_owned(),
                ),
                CampaignsError::BadPageToken => (
                    StatusCode::BAD_REQUEST,
                    "This page link is out of date; start again from the first page.".to_owned(),
                ),
                CampaignsError::Unavailable(why) => {
                    tracing::warn!(reason = %why, "the campaigns page could not reach membership");
                    (
                        StatusCode::BAD_GATEWAY,
                        "Membership could not be reached, so campaign results cannot be shown right now; try again shortly."
                            .to_owned(),
                    )
                }
            };
            page.problem = Some(message);
            page.status = Some(status);
            return Ok(page);
        }
    };
    let currency = listed
        .campaigns
        .iter()
        .map(|c| c.report.currency.as_str())
        .find(|c| !c.is_empty())
        .unwrap_or("");
    let mut table = Table::new(
        "campaigns",
        if currency.is_empty() {
            "Newest first; purchases within the attribution window after each contact".to_owned()
        } else {
            format!("Newest first; purchases within the attribution window after each contact; amounts in {currency}")
        },
        &[
            "campaign",
            "state",
            "window",
            "audience",
            "control_share",
            "reached",
            "responded",
            "response_rate",
            "control",
            "control_responded",
            "control_response_rate",
            "revenue",
            "control_revenue",
            "incremental_revenue",
            "cost",
            "roi",
        ],
    );
    let mut rows = Vec::new();
    for c in &listed.campaigns {
        let r = &c.report;
        table.row(vec![
            c.display_name.clone().into(),
            c.state.clone().into(),
            format!("{} to {}", date_time(c.start), date_time(c.end)).into(),
            c.audience.clone().into(),
            bp(i64::from(c.control_share_bp)).into(),
            r.reached.to_string().into(),
            r.responded.to_string().into(),
            bp(r.response_rate_bp).into(),
            r.control.to_string().into(),
            r.control_responded.to_string().into(),
            bp(r.control_response_rate_bp).into(),
            money(r.revenue).into(),
            money(r.control_revenue).into(),
            money(r.incremental_revenue).into(),
            money(r.cost).into(),
            r.roi_bp.map_or_else(String::new, bp).into(),
        ]);
        rows.push((
            shorten(&c.display_name, 20),
            [
                r.response_rate_bp as f64 / 10_000.0,
                r.control_response_rate_bp as f64 / 10_000.0,
            ],
            [
                format!(
                    "{}: targeted {} ({} of {} reached)",
                    c.display_name,
                    bp(r.response_rate_bp),
                    r.responded,
                    r.reached
                ),
                format!(
                    "{}: control {} ({} of {} held back)",
                    c.display_name,
                    bp(r.control_response_rate_bp),
                    r.control_responded,
                    r.control
                ),
            ],
        ));
    }
    let first = !params.page_token.is_empty();
    let next = (!listed.next_page_token.is_empty()).then(|| params.with(&[("page_token", &listed.next_page_token)]));
    let pager = (first || next.is_some()).then(|| {
        html! {
            p.pager {
                @if first { a href={ "/campaigns" (params.with(&[("page_token", "")])) } { "First page" } }
                @if let Some(n) = &next { a rel="next" href={ "/campaigns" (n) } { "Next page" } }
            }
        }
    });
    page.sections.push(Section {
        heading: "Response rate, targeted against control".into(),
        chart: Some(view::paired_bar_chart(["targeted", "control"], &rows, None)),
        empty: listed.campaigns.is_empty().then(|| {
            if first {
                "No more campaigns.".to_owned()
            } else {
                "No campaign yet.".to_owned()
            }
        }),
        table: Some(table),
        extra: pager,
        ..Section::default()
    });
    page.sections
        .push(win_back_section(state.app.win_back_rates(period).await?));
    Ok(page)
}

/// Wake-up (sleeping members) and reactivation (lost members) rates of the
/// period's campaign decisions, targeted against control: of the members decided
/// for, the share who bought again within the attribution window.
fn win_back_section(rates: crate::app::members::WinBackRates) -> Section {
    use crate::app::members::WinBack;
    let measures: [(&str, &str, WinBack, WinBack); 2] = [
        ("wake-up", "sleeping", rates.wake_up, rates.wake_up_control),
        ("reactivation", "lost", rates.reactivation, rates.reactivation_control),
    ];
    let mut table = Table::new(
        "win_back",
        "Members decided for by a campaign in the period, and those who bought again within its attribution window",
        &[
            "rate",
            "targeted",
            "targeted_bought_again",
            "targeted_members",
            "control",
            "control_bought_again",
            "control_members",
        ],
    );
    let mut rows = Vec::new();
    for (label, state, targeted, control) in measures {
        table.row(vec![
            label.into(),
            pct(targeted.rate).into(),
            targeted.bought_again.to_string().into(),
            targeted.members.to_string().into(),
            pct(control.rate).into(),
            control.bought_again.to_string().into(),
            control.members.to_string().into(),
        ]);
        rows.push((
            label.to_owned(),
            [targeted.rate, control.rate],
            [
                format!(
                    "{label}: targeted {} ({} of {} {state} members contacted)",
                    pct(targeted.rate),
                    targeted.bought_again,
                    targeted.members
                ),
                format!(
                    "{label}: control {} ({} of {} {state} members held back)",
                    pct(control.rate),
                    control.bought_again,
                    control.members
                ),
            ],
        ));
    }
    let nobody = [
        rates.wake_up,
        rates.wake_up_control,
        rates.reactivation,
        rates.reactivation_control,
    ]
    .iter()
    .all(|w| w.members == 0);
    Section {
        heading: "Wake-up and reactivation, targeted against control".into(),
        chart: Some(view::paired_bar_chart(["targeted", "control"], &rows, None)),
        empty: nobody.then(|| "No campaign targeted sleeping or lost members in this period.".to_owned()),
        table: Some(table),
        ..Section::default()
    }
}
