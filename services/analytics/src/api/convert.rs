//! The app's answers into protobuf messages.

use chrono::DateTime;
use retail_kit::convert::timestamp;
use retail_proto::analytics as pb;

use crate::app::SourcePosition;
use crate::app::kpis::SalesFigures;
use crate::app::members::WinBack;
use crate::app::partners::LeadConversion;
use crate::app::stores::PlaceRate;
use crate::app::touchpoints::Outcome;

pub fn ts(t: i64) -> Option<prost_types::Timestamp> {
    DateTime::from_timestamp(t, 0).map(timestamp)
}

pub fn freshness(positions: Vec<SourcePosition>) -> Option<pb::Freshness> {
    Some(pb::Freshness {
        positions: positions
            .into_iter()
            .map(|p| pb::SourcePosition {
                source: p.source,
                position: p.position,
                update_time: ts(p.updated_at),
            })
            .collect(),
    })
}

pub fn figures(f: &SalesFigures) -> pb::SalesFigures {
    pb::SalesFigures {
        revenue_minor: f.revenue,
        orders: f.orders,
        average_order_value_minor: f.aov,
        customers: f.customers,
        spend_per_customer_minor: f.spend_per_customer,
        units: f.units,
        items_per_ticket: f.items_per_ticket,
        refunded_minor: f.refunded,
    }
}

pub fn place_rates(rates: Vec<PlaceRate>) -> Vec<pb::PlaceRate> {
    rates
        .into_iter()
        .map(|r| pb::PlaceRate {
            place: r.place,
            base: r.base,
            count: r.count,
            rate: r.rate,
        })
        .collect()
}

pub fn outcome(o: Outcome) -> pb::IngestTouchpointsResponse {
    pb::IngestTouchpointsResponse {
        accepted: o.accepted as i32,
        duplicates: o.duplicates as i32,
        rejections: o
            .rejections
            .into_iter()
            .map(|r| pb::Rejection {
                index: r.index as i32,
                event_id: r.event_id,
                field: r.field.to_owned(),
                reason: r.reason,
            })
            .collect(),
    }
}

pub fn leads(l: LeadConversion) -> pb::LeadFigures {
    pb::LeadFigures {
        partner: l.partner,
        offered: l.offered,
        accepted: l.accepted,
        declined: l.declined,
        timed_out: l.timed_out,
        unassigned: l.unassigned,
        won: l.won,
        lost: l.lost,
        acceptance_rate: l.acceptance_rate,
        decline_rate: l.decline_rate,
        timeout_rate: l.timeout_rate,
        win_rate: l.win_rate,
    }
}

pub fn win_back(w: WinBack) -> pb::WinBackRate {
    pb::WinBackRate {
        members: w.members,
        bought_again: w.bought_again,
        rate: w.rate,
    }
}
