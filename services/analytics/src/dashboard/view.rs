//! The layout, tables, CSV and hand-built SVG charts. maud escapes every value
//! spliced into the markup (names, codes, ids are user input); charts carry the
//! exact figure of each mark in a `<title>` element, shown on hover.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::query::Params;
use super::session::Viewer;

const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

pub async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

/// A table: an id (for its CSV), headers and rows of display strings.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub id: &'static str,
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// One cell: its text, and a link when it drills down.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text, href: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            href: None,
        }
    }
}

impl Table {
    pub fn new(id: &'static str, caption: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            id,
            caption: caption.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn csv(&self) -> String {
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let quoted: Vec<String> = cells.into_iter().map(csv_field).collect();
            out.push_str(&quoted.join(","));
            out.push_str("\r\n");
        };
        line(self.headers.iter().map(String::as_str).collect(), &mut out);
        for row in &self.rows {
            line(row.iter().map(|c| c.text.as_str()).collect(), &mut out);
        }
        out
    }
}

/// A CSV field: quoted when needed; a value that a spreadsheet would run as a
/// formula (a leading `=`, `@`, or a sign not followed by a plain figure) is
/// prefixed with `'`.
fn csv_field(s: &str) -> String {
    let signed_figure = |rest: &str| rest.chars().all(|c| c.is_ascii_digit() || ".% pts".contains(c));
    let risky = s.starts_with(['=', '@', '\t', '\r']) || (s.starts_with(['+', '-']) && !signed_figure(&s[1..]));
    let s = if risky { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) || s.starts_with('\'') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// A section of a page: a heading, an optional chart, an optional table.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub heading: String,
    pub chart: Option<Markup>,
    pub table: Option<Table>,
    /// Shown instead of chart and table when the section has no data.
    pub empty: Option<String>,
    /// Figures shown as cards above the chart.
    pub cards: Vec<Card>,
    /// Extra markup (a form, links) under the heading.
    pub extra: Option<Markup>,
}

/// A headline figure with its change against the previous period.
#[derive(Debug, Clone)]
pub struct Card {
    pub id: &'static str,
    pub label: String,
    pub value: String,
    pub previous: String,
    /// Relative change, when it makes sense.
    pub change: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub path: &'static str,
    pub title: String,
    /// Which filters the page's picker offers.
    pub filters: Vec<(&'static str, Vec<String>)>,
    pub sections: Vec<Section>,
    /// A message in place of the figures (an invalid period, a service that
    /// could not be reached).
    pub problem: Option<String>,
    /// The response's status; 200 when unset.
    pub status: Option<StatusCode>,
}

pub const NAV: [(&str, &str); 12] = [
    ("/", "Overview"),
    ("/sales", "Sales"),
    ("/pyramid", "Pyramid"),
    ("/rfm", "RFM"),
    ("/lifecycle", "Lifecycle"),
    ("/cohorts", "Cohorts"),
    ("/stores", "Stores"),
    ("/staff", "Staff"),
    ("/products", "Products"),
    ("/partners", "Partners"),
    ("/campaigns", "Campaigns"),
    ("/login", ""),
];

/// The whole HTML document.
pub fn document(title: &str, top: Option<Markup>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - retail analytics" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body {
                @if let Some(top) = top { (top) }
                main id="content" { (body) }
            }
        }
    }
}

/// An HTML response.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (status, axum::response::Html(markup.into_string())).into_response()
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        section.login {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p { (message) }
            p { a href="/" { "Dashboard" } " · " a href="/login" { "Sign in" } }
        }
    };
    html_response(
        status,
        document(status.canonical_reason().unwrap_or("Error"), None, body),
    )
}

fn percent(change: f64) -> String {
    format!("{:+.1}%", change * 100.0)
}

/// Renders `page` as HTML, or one table as CSV with `?format=csv`.
pub fn render(page: Page, params: &Params, viewer: Viewer, refresh_secs: u64) -> Response {
    let status = page.status.unwrap_or(StatusCode::OK);
    let mut response = if params.format == "csv" && status != StatusCode::OK {
        (status, page.problem.clone().unwrap_or_default()).into_response()
    } else if params.format == "csv" {
        let tables: Vec<&Table> = page.sections.iter().filter_map(|s| s.table.as_ref()).collect();
        let table = tables.iter().find(|t| t.id == params.table).or(tables.first()).copied();
        match table {
            Some(t) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{}.csv\"", t.id),
                    ),
                ],
                t.csv(),
            )
                .into_response(),
            None => (StatusCode::NOT_FOUND, "no table on this page").into_response(),
        }
    } else {
        html_response(status, html_page(&page, params, &viewer, refresh_secs))
    };
    super::session::append_cookies(&mut response, viewer.set_cookies);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn html_page(page: &Page, params: &Params, viewer: &Viewer, refresh_secs: u64) -> Markup {
    let kind = params.period_kind();
    let campaigns = super::session::allowed(&viewer.principal, super::session::Access::Campaigns);
    let top = html! {
        header.top {
            span.brand { "Retail analytics" }
            nav {
                @for (path, label) in NAV.iter().filter(|(p, l)| !l.is_empty() && (*p != "/campaigns" || campaigns)) {
                    a href={ (path) (params.with(&[("page", ""), ("page_token", "")])) } class=[(*path == page.path).then_some("current")] { (label) }
                }
            }
            form.logout method="post" action="/logout" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                span.who { (viewer.principal.subject) }
                button type="submit" { "Sign out" }
            }
        }
    };
    let body = html! {
        h1 { (page.title) }
        form.picker method="get" action=(page.path) {
            label { "Period "
                select name="period" {
                    @for p in ["day", "week", "month", "quarter", "custom"] {
                        option value=(p) selected[kind == p] { (p) }
                    }
                }
            }
            label { "From " input type="date" name="from" value=(params.from); }
            label { "To " input type="date" name="to" value=(params.to); }
            @for (name, values) in &page.filters {
                label { (name) " "
                    select name=(name) {
                        option value="" { "all" }
                        @for v in values {
                            option value=(v) selected[params.filter(name) == v] { (v) }
                        }
                    }
                }
            }
            button type="submit" { "Apply" }
        }
        div id="live" data-refresh=(refresh_secs) {}
        @if let Some(problem) = &page.problem {
            p.error role="alert" { (problem) }
        } @else {
            @for section in &page.sections {
                section.panel {
                    h2 { (section.heading) }
                    @if let Some(extra) = &section.extra { (extra) }
                    @if let Some(empty) = &section.empty {
                        p.empty { (empty) }
                    } @else {
                        @if !section.cards.is_empty() {
                            div.cards {
                                @for card in &section.cards {
                                    div.card id={ "kpi-" (card.id) } {
                                        div.label { (card.label) }
                                        div.value data-kpi=(card.id) { (card.value) }
                                        div.previous { "previous " (card.previous) }
                                        @if let Some(change) = card.change {
                                            div class=(if change >= 0.0 { "change up" } else { "change down" }) { (percent(change)) }
                                        }
                                    }
                                }
                            }
                        }
                        @if let Some(chart) = &section.chart { div.chart { (chart) } }
                        @if let Some(table) = &section.table { (table_markup(table, page.path, params)) }
                    }
                }
            }
        }
        script src="/assets/app.js" {}
    };
    document(&page.title, Some(top), body)
}

fn table_markup(table: &Table, path: &str, params: &Params) -> Markup {
    html! {
        div.table {
            table id={ "table-" (table.id) } {
                caption {
                    (table.caption) " "
                    a.csv href={ (path) (params.with(&[("format", "csv"), ("table", table.id)])) } { "CSV" }
                }
                thead { tr { @for h in &table.headers { th scope="col" { (h) } } } }
                tbody {
                    @for row in &table.rows {
                        tr {
                            @for cell in row {
                                td {
                                    @if let Some(href) = &cell.href { a href=(href) { (cell.text) } } @else { (cell.text) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

const PALETTE: [&str; 8] = [
    "#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#ca8a04", "#dc2626", "#4b5563",
];

pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn fmt_axis(v: f64) -> String {
    if v.abs() >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v.abs() >= 1_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else {
        format!("{v:.0}")
    }
}

// SVG elements are closed explicitly (`{}`): inside HTML, `<rect>` without `/>`
// or `</rect>` would swallow the elements after it.

/// Horizontal bars: a label, a value and the hover text of each bar.
pub fn bar_chart(bars: &[(String, f64, String)]) -> Markup {
    let max = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE);
    let row = 28.0;
    let height = row * bars.len() as f64 + 8.0;
    html! {
        svg.bars viewBox={ "0 0 640 " (height) } role="img" preserveAspectRatio="xMinYMin meet" {
            @for (i, (label, value, hover)) in bars.iter().enumerate() {
                @let y = 4.0 + row * i as f64;
                @let w = (value.max(0.0) / max * 420.0).max(1.0);
                g.mark {
                    title { (hover) }
                    text x="0" y=(y + 18.0) { (label) }
                    rect x="150" y=(y + 4.0) width=(format!("{w:.1}")) height=(row - 8.0) fill=(color(i)) {}
                    text x=(format!("{:.1}", 156.0 + w)) y=(y + 18.0) { (fmt_axis(*value)) }
                }
            }
        }
    }
}

/// Two horizontal bars per row (two series, e.g. attainment so far and
/// projected): a label, and each series' value and hover text; a legend names
/// the series. A dashed rule marks `mark` (e.g. 100%) when it is in range.
pub fn paired_bar_chart(names: [&str; 2], rows: &[(String, [f64; 2], [String; 2])], mark: Option<f64>) -> Markup {
    let max = rows
        .iter()
        .flat_map(|r| r.1)
        .chain(mark)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let row = 40.0;
    let height = row * rows.len() as f64 + 32.0;
    let scale = |v: f64| (v.max(0.0) / max * 400.0).max(1.0);
    html! {
        svg.bars.paired viewBox={ "0 0 640 " (height) } role="img" preserveAspectRatio="xMinYMin meet" {
            @for (s, name) in names.iter().enumerate() {
                rect x=(150.0 + 160.0 * s as f64) y="4" width="12" height="12" fill=(color(s)) {}
                text x=(166.0 + 160.0 * s as f64) y="15" { (name) }
            }
            @for (i, (label, values, hovers)) in rows.iter().enumerate() {
                @let y = 28.0 + row * i as f64;
                text x="0" y=(y + 22.0) { (label) }
                @for s in 0..2 {
                    @let w = scale(values[s]);
                    @let top = y + 2.0 + 17.0 * s as f64;
                    g.mark data-series=(names[s]) {
                        title { (hovers[s]) }
                        rect x="150" y=(top) width=(format!("{w:.1}")) height="15" fill=(color(s)) {}
                        text x=(format!("{:.1}", 156.0 + w)) y=(top + 12.0) { (format!("{:.1}%", values[s] * 100.0)) }
                    }
                }
            }
            @if let Some(m) = mark {
                @let x = 150.0 + scale(m);
                line.grid x1=(format!("{x:.1}")) x2=(format!("{x:.1}")) y1="24" y2=(height) stroke-dasharray="4 3" {}
            }
        }
    }
}

/// Lines over buckets, one per series; each point has its exact value on hover.
pub fn line_chart(labels: &[String], series: &[(String, Vec<f64>)], unit: &str) -> Markup {
    let (w, h, left, top, bottom) = (640.0, 260.0, 56.0, 12.0, 40.0);
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let n = labels.len().max(1);
    let step = if n > 1 { (w - left - 12.0) / (n - 1) as f64 } else { 0.0 };
    let x = |i: usize| left + step * i as f64;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v.max(0.0) / max);
    let every = n.div_ceil(8).max(1);
    html! {
        svg.lines viewBox={ "0 0 " (w) " " (h + 24.0 * series.len().div_ceil(4) as f64) } role="img" {
            @for k in 0..=4 {
                @let v = max * k as f64 / 4.0;
                line.grid x1=(left) x2=(w - 8.0) y1=(format!("{:.1}", y(v))) y2=(format!("{:.1}", y(v))) {}
                text.axis x=(left - 4.0) y=(format!("{:.1}", y(v) + 4.0)) text-anchor="end" { (fmt_axis(v)) }
            }
            @for (i, label) in labels.iter().enumerate() {
                @if i % every == 0 {
                    text.axis x=(format!("{:.1}", x(i))) y=(h - bottom + 16.0) text-anchor="middle" { (label) }
                }
            }
            @for (s, (name, values)) in series.iter().enumerate() {
                @let points: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
                polyline fill="none" stroke=(color(s)) stroke-width="2" points=(points.join(" ")) {}
                @for (i, v) in values.iter().enumerate() {
                    circle.mark cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(*v))) r="4" fill=(color(s)) {
                        title { (name) " " (labels.get(i).map_or("", String::as_str)) ": " (format!("{v:.2}")) " " (unit) }
                    }
                }
                @let lx = left + 150.0 * (s % 4) as f64;
                @let ly = h + 4.0 + 24.0 * (s / 4) as f64;
                rect x=(lx) y=(ly) width="12" height="12" fill=(color(s)) {}
                text x=(lx + 16.0) y=(ly + 11.0) { (name) }
            }
        }
    }
}

/// A heat map: rows of cells with values in 0..=1 (shares), each with its value
/// on hover.
pub fn heat_map(rows: &[(String, Vec<f64>)], columns: usize) -> Markup {
    let (cell_w, cell_h, left) = (36.0, 22.0, 72.0);
    let w = left + cell_w * columns.max(1) as f64 + 8.0;
    let h = 20.0 + cell_h * rows.len() as f64;
    html! {
        svg.heat viewBox={ "0 0 " (w) " " (h) } role="img" {
            @for k in 0..columns {
                text.axis x=(format!("{:.1}", left + cell_w * k as f64 + cell_w / 2.0)) y="14" text-anchor="middle" { "+" (k + 1) }
            }
            @for (r, (label, values)) in rows.iter().enumerate() {
                @let y = 20.0 + cell_h * r as f64;
                text.axis x="0" y=(y + 15.0) { (label) }
                @for (k, v) in values.iter().enumerate() {
                    rect.mark x=(format!("{:.1}", left + cell_w * k as f64)) y=(y) width=(cell_w - 2.0) height=(cell_h - 2.0)
                        fill="#2563eb" fill-opacity=(format!("{:.3}", 0.08 + 0.92 * v.clamp(0.0, 1.0))) {
                        title { (label) " month +" (k + 1) ": " (format!("{:.1}%", v * 100.0)) }
                    }
                }
            }
        }
    }
}

/// The pyramid: centred bars, top layer first, widths by headcount share.
pub fn pyramid_chart(layers: &[(String, f64, String)]) -> Markup {
    let row = 30.0;
    let h = row * layers.len() as f64 + 4.0;
    html! {
        svg.pyramid viewBox={ "0 0 640 " (h) } role="img" {
            @for (i, (label, share, hover)) in layers.iter().enumerate() {
                @let w = 40.0 + 520.0 * ((i + 1) as f64 / layers.len() as f64);
                @let y = 2.0 + row * i as f64;
                g.mark {
                    title { (hover) }
                    rect x=(format!("{:.1}", 320.0 - w / 2.0)) y=(y) width=(format!("{w:.1}")) height=(row - 4.0) fill=(color(i)) fill-opacity="0.8" {}
                    text x="320" y=(y + 18.0) text-anchor="middle" fill="#fff" { (label) " · " (format!("{:.1}%", share * 100.0)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("-3.8%"), "-3.8%");
        assert_eq!(csv_field("+1.0 pts"), "+1.0 pts");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv_field("-2+cmd|x"), "\"'-2+cmd|x\"");
        assert_eq!(csv_field("@sum"), "\"'@sum\"");
    }
}
